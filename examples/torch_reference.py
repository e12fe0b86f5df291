"""The PyTorch reference for `convscope train`: the same network, initial weights, data order and
recipe (the model's, or --recipe: optimiser, learning-rate schedule, weight decay, batch size, epochs,
augmentation, label smoothing, validation split; per-channel standardisation), trained by PyTorch on
the CPU (or --device cuda). Each epoch's wall time is printed beside its loss.

    python examples/torch_reference.py --dataset fashion-mnist \\
        --data-dir ../shared/data/fashion-mnist --epochs 10
    python examples/torch_reference.py --dataset cifar10:cat,dog \\
        --data-dir ../shared/data/cifar10-catdog --augment --epochs 15 --seed 1
    python examples/torch_reference.py --dataset cifar10 --data-dir ../shared/data/cifar10 \\
        --model resnet20 --recipe budget        # validates on the last 5,000 images, as convscope

convscope trains on shards of each batch in parallel, and its batch normalisation uses each shard's own
statistics (two shards of 64 on two cores: README, Speed). `--bn-shards 2` does the same here: each half
of a batch goes through the network on its own, so the two engines see the same normalisation.

For models without dropout the data order and the augmentation draws equal those of `convscope train`
with the same seed: one numpy Generator shuffles and augments in the same order. The learning rate of
every step comes from the same schedule object as convscope's (convscope.optim), set on the torch
optimiser before the step.
"""

import argparse
import time

import numpy as np
import torch

from convscope import data
from convscope.cli.options import hold_out, val_split
from convscope.cli.train import DEFAULT_LR, RECIPE_FLAGS, _make_schedule
from convscope.data.augment import Augmentation
from convscope.interop.pytorch import images_to_torch, to_torch
from convscope.models import MODELS, NAMED_RECIPES, recipe_settings
from convscope.train import batch_indices


def _optimizer(settings, params, lr):
    if settings["optimizer"] == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=0.9, nesterov=settings["nesterov"], weight_decay=settings["weight_decay"]
        )
    return torch.optim.Adam(params, lr=lr, weight_decay=settings["weight_decay"])


def _forward(net, x, shards):
    """The logits of batch x (N, C, H, W), batch normalisation using the statistics of each of `shards`
    equal parts of x (torch.chunk) on its own."""
    if shards == 1:
        return net(x)
    return torch.cat([net(part) for part in torch.chunk(x, shards)])


def _accuracy(net, x, y):
    """(accuracy, accuracy with flip TTA) of net in inference mode on images x (N, C, H, W), labels y."""
    net.eval()
    with torch.inference_mode():
        probabilities = net(x).softmax(dim=1)
        mirrored = (probabilities + net(torch.flip(x, dims=[3])).softmax(dim=1)) / 2
    net.train()
    hits = [(p.argmax(dim=1).cpu().numpy() == y).mean() for p in (probabilities, mirrored)]
    return float(hits[0]), float(hits[1])


def _held_out(args, settings):
    """(training images, labels, evaluation images, labels, what those are, number of classes): the
    validation split when the recipe or --val-split asks for one (as convscope train), else the test split."""
    train = data.load(args.dataset, args.data_dir, "train")
    classes = len(train.class_names)
    if settings["val_split"] is not None:
        ((images, labels), (x_eval, y_eval)), which = hold_out(train, settings["val_split"], args.seed)
        return images, labels, x_eval, y_eval, f"validation ({which})", classes
    test = data.load(args.dataset, args.data_dir, "test")
    return train.images, train.labels, test.images, test.labels, "test", classes


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--data-dir")
    parser.add_argument("--model", choices=tuple(MODELS), default="seed")
    parser.add_argument("--recipe", choices=NAMED_RECIPES, help="default: the model's")
    parser.add_argument("--epochs", type=int, help="default: the recipe's")
    parser.add_argument("--batch-size", type=int, help="default: the recipe's")
    parser.add_argument("--optimizer", choices=("adam", "sgd"), help="default: the recipe's")
    parser.add_argument("--lr", type=float, help="peak of the schedule (default: the recipe's)")
    parser.add_argument("--schedule", choices=("onecycle", "cosine", "steps", "none"))
    parser.add_argument("--weight-decay", type=float, help="default: the recipe's")
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, help="flips and padded crops")
    parser.add_argument("--crop-padding", type=int, help="default: the model's recipe")
    parser.add_argument("--cutout", type=int, help="with --augment, a zeroed square of this side (default 0)")
    parser.add_argument("--label-smoothing", type=float, help="default: the model's recipe")
    parser.add_argument("--val-split", type=val_split, help="FRACTION or last:N (default: the recipe's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="torch device: cpu (default), cuda, cuda:1 ...")
    parser.add_argument("--bn-shards", type=int, default=1, help="batch-norm statistics per part (see above)")
    parser.add_argument("--eval-each-epoch", action="store_true", help="held-out accuracy after every epoch")
    args = parser.parse_args()
    settings = recipe_settings(
        args.model, args.recipe, **{flag: getattr(args, flag) for flag in RECIPE_FLAGS}
    )
    lr = settings["lr"] or DEFAULT_LR[settings["optimizer"]]
    epochs, batch_size = settings["epochs"], settings["batch_size"]

    x_train, y_train, x_eval, y_eval, held_out, classes = _held_out(args, settings)
    model = MODELS[args.model](x_train.shape[1:], classes, seed=args.seed)
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    net = to_torch(model)[:-1].to(device)  # the logits: cross_entropy has the softmax
    optimizer = _optimizer(settings, net.parameters(), lr)
    schedule = _make_schedule(settings["schedule"], lr)
    steps = epochs * -(-len(y_train) // batch_size)
    augment = None
    if settings["augment"]:
        augment = Augmentation(flip=True, crop_padding=settings["crop_padding"], cutout=settings["cutout"])
    rng = np.random.default_rng(args.seed)
    mean = x_train.mean(axis=(0, 1, 2), dtype=np.float64).astype(np.float32)
    std = x_train.std(axis=(0, 1, 2), dtype=np.float64).astype(np.float32)
    labels = torch.from_numpy(y_train).to(device)
    x_held_out = images_to_torch((x_eval - mean) / std).to(device)
    print(
        f"{args.model} in torch {torch.__version__} on {device} ({torch.get_num_threads()} threads, "
        f"batch norm in {args.bn_shards} part(s) of a batch): "
        f"{len(y_train)} training images, {settings['optimizer']} lr {lr} ({settings['schedule']}), "
        f"batch {batch_size}, {epochs} epochs",
        flush=True,
    )
    step = 0
    for epoch in range(1, epochs + 1):
        net.train()
        total, start = torch.zeros((), device=device), time.perf_counter()
        for idx in batch_indices(len(labels), batch_size, rng):
            if schedule is not None:
                for group in optimizer.param_groups:
                    group["lr"] = schedule(step, steps)
            batch = x_train[idx] if augment is None else augment(x_train[idx], rng)
            optimizer.zero_grad(set_to_none=True)
            logits = _forward(net, images_to_torch((batch - mean) / std).to(device), args.bn_shards)
            loss = torch.nn.functional.cross_entropy(
                logits, labels[torch.from_numpy(idx).to(device)], label_smoothing=settings["label_smoothing"]
            )
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(idx)
            step += 1
        seconds = time.perf_counter() - start
        line = f"epoch {epoch}/{epochs}  loss={total.item() / len(labels):.4f}  ({seconds:.1f} s)"
        if args.eval_each_epoch and epoch < epochs:
            accuracy, with_tta = _accuracy(net, x_held_out, y_eval)
            line += f"  {held_out} accuracy={accuracy:.4f} (with --tta {with_tta:.4f})"
        print(line, flush=True)
    accuracy, with_tta = _accuracy(net, x_held_out, y_eval)
    print(f"torch {held_out} accuracy: {accuracy:.4f}")
    if settings["augment"]:
        print(f"torch {held_out} accuracy with --tta: {with_tta:.4f}")


if __name__ == "__main__":
    main()
