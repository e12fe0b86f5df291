"""The PyTorch reference for `convscope train`: the same seed CNN, initial weights, data order and
recipe (Adam with a one-cycle lr up to 3e-3, per-channel standardisation, batch 64, shuffled with
the same seed), trained by PyTorch on the CPU.

    python examples/torch_reference.py --dataset fashion-mnist \
        --data-dir ../shared/data/fashion-mnist --epochs 10
"""

import argparse

import numpy as np
import torch

from convscope import data
from convscope.interop.pytorch import images_to_torch, to_torch
from convscope.models import seed_cnn
from convscope.train import batch_indices


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist", choices=data.DATASETS)
    parser.add_argument("--data-dir")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3, help="peak of the one-cycle schedule")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    train = data.load(args.dataset, args.data_dir, "train")
    test = data.load(args.dataset, args.data_dir, "test")
    net = to_torch(seed_cnn(train.images.shape[1:], len(train.class_names), seed=args.seed))[:-1]
    optimizer = torch.optim.Adam(net.parameters(), lr=args.lr)
    steps = args.epochs * -(-len(train.labels) // args.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, args.lr, total_steps=steps, cycle_momentum=False
    )
    rng = np.random.default_rng(args.seed)
    mean = train.images.mean(axis=(0, 1, 2), dtype=np.float64).astype(np.float32)
    std = train.images.std(axis=(0, 1, 2), dtype=np.float64).astype(np.float32)
    x_train, y_train = images_to_torch((train.images - mean) / std), torch.from_numpy(train.labels)
    for epoch in range(1, args.epochs + 1):
        net.train()
        total = 0.0
        for idx in batch_indices(len(y_train), args.batch_size, rng):
            index = torch.from_numpy(idx)
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(net(x_train[index]), y_train[index])
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(idx)
        print(f"epoch {epoch}/{args.epochs}  loss={total / len(y_train):.4f}", flush=True)
    net.eval()
    with torch.inference_mode():
        predicted = net(images_to_torch((test.images - mean) / std)).argmax(dim=1).numpy()
    print(f"torch test accuracy: {(predicted == test.labels).mean():.4f}")


if __name__ == "__main__":
    main()
