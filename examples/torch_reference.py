"""The PyTorch reference for `convscope train`: the same network, initial weights, data order and
recipe (Adam with a one-cycle lr up to 3e-3, per-channel standardisation, batch 64, shuffled with
the same seed; optionally the same augmentation and label smoothing), trained by PyTorch on the CPU.

    python examples/torch_reference.py --dataset fashion-mnist \\
        --data-dir ../shared/data/fashion-mnist --epochs 10
    python examples/torch_reference.py --dataset cifar10:cat,dog \\
        --data-dir ../shared/data/cifar10-catdog --augment --epochs 15 --seed 1

For the seed CNN (no dropout) the data order and the augmentation draws equal those of
`convscope train` with the same seed: one numpy Generator shuffles and augments in the same order.
"""

import argparse

import numpy as np
import torch

from convscope import data
from convscope.data.augment import Augmentation
from convscope.interop.pytorch import images_to_torch, to_torch
from convscope.models import MODELS, recipe_settings
from convscope.train import batch_indices


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--data-dir")
    parser.add_argument("--model", choices=tuple(MODELS), default="seed")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3, help="peak of the one-cycle schedule")
    parser.add_argument("--augment", action="store_true", help="random flips and padded crops")
    parser.add_argument("--crop-padding", type=int, help="default: the model's recipe")
    parser.add_argument("--label-smoothing", type=float, help="default: the model's recipe")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    recipe = recipe_settings(args.model, crop_padding=args.crop_padding, label_smoothing=args.label_smoothing)
    crop_padding, smoothing = recipe["crop_padding"], recipe["label_smoothing"]

    train = data.load(args.dataset, args.data_dir, "train")
    test = data.load(args.dataset, args.data_dir, "test")
    model = MODELS[args.model](train.images.shape[1:], len(train.class_names), seed=args.seed)
    net = to_torch(model)[:-1]
    optimizer = torch.optim.Adam(net.parameters(), lr=args.lr)
    steps = args.epochs * -(-len(train.labels) // args.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, args.lr, total_steps=steps, cycle_momentum=False
    )
    augment = Augmentation(flip=True, crop_padding=crop_padding) if args.augment else None
    rng = np.random.default_rng(args.seed)
    mean = train.images.mean(axis=(0, 1, 2), dtype=np.float64).astype(np.float32)
    std = train.images.std(axis=(0, 1, 2), dtype=np.float64).astype(np.float32)
    y_train = torch.from_numpy(train.labels)
    for epoch in range(1, args.epochs + 1):
        net.train()
        total = 0.0
        for idx in batch_indices(len(y_train), args.batch_size, rng):
            batch = train.images[idx] if augment is None else augment(train.images[idx], rng)
            optimizer.zero_grad(set_to_none=True)
            logits = net(images_to_torch((batch - mean) / std))
            loss = torch.nn.functional.cross_entropy(
                logits, y_train[torch.from_numpy(idx)], label_smoothing=smoothing
            )
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(idx)
        print(f"epoch {epoch}/{args.epochs}  loss={total / len(y_train):.4f}", flush=True)
    net.eval()
    with torch.inference_mode():
        x_test = images_to_torch((test.images - mean) / std)
        probabilities = net(x_test).softmax(dim=1)
        mirrored = (probabilities + net(torch.flip(x_test, dims=[3])).softmax(dim=1)) / 2
    print(f"torch test accuracy: {(probabilities.argmax(dim=1).numpy() == test.labels).mean():.4f}")
    if args.augment:
        print(f"torch test accuracy with --tta: {(mirrored.argmax(dim=1).numpy() == test.labels).mean():.4f}")


if __name__ == "__main__":
    main()
