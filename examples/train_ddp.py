"""Continue training a convscope model with PyTorch DistributedDataParallel (DDP), one process per
GPU, or per CPU slot with the gloo backend; then bring the result back as a .convscope file.

MODEL is a .convscope file (converted with convscope.interop.to_torch) or a folder written by
`convscope export MODEL --format torch --out DIR` (its model.py is imported: trust the folder).

    # one machine, 4 GPUs (NCCL); on CPUs the same line uses gloo
    torchrun --standalone --nproc_per_node 4 examples/train_ddp.py fm.convscope \\
        --dataset fashion-mnist --data-dir ../shared/data/fashion-mnist --epochs 2 --out ddp-out
    # two machines with 8 GPUs each: run this on both (HOST is the first machine's address)
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29400 \\
        --rdzv-id fm-job examples/train_ddp.py fm.convscope --dataset fashion-mnist --data-dir ...

Each process trains on its own shard of the data (DistributedSampler); DDP averages the gradients
across all processes at every step, so every replica holds the same weights throughout. --batch-size
is per process: the global batch is batch size x world size (scale the learning rate with it).

Writes to --out: rank{R}.safetensors (that replica's final weights, torch layout) and rank{R}.json
(evaluation loss before and after, the training losses), and from rank 0 model.convscope (the
trained network converted back with convscope.interop.from_torch).
"""

import argparse
import itertools
import json
import os
import socket
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from convscope import data
from convscope.interop import from_torch, to_torch
from convscope.interop.torch_export import import_torch_export
from convscope.model_file import load_model


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a .convscope file or a `convscope export --format torch` folder")
    parser.add_argument("--dataset", choices=data.DATASETS, default="digits")
    parser.add_argument("--data-dir", help="folder with the data set's IDX files (mnist, fashion-mnist)")
    parser.add_argument("--limit", type=int, help="train on the first N training images only")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--steps", type=int, help="stop after this many steps (default: --epochs passes)")
    parser.add_argument("--batch-size", type=int, default=64, help="per process")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--eval-images", type=int, default=512, help="test images for the loss before/after")
    parser.add_argument("--backend", choices=("nccl", "gloo"), help="default: nccl with GPUs, else gloo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="ddp-output", help="folder for the results")
    return parser.parse_args(argv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup(backend):
    """Join the process group torchrun describes in the environment (or a group of one without
    torchrun); returns (rank, world size, device)."""
    if "RANK" not in os.environ:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", WORLD_SIZE="1")
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size(), device


def load_network(path):
    """(nn.Sequential on NCHW images, convscope input shape (H, W, C), class names)."""
    if os.path.isdir(path):
        exported = import_torch_export(path)
        c, h, w = exported.INPUT_SHAPE
        return exported.load_model(), (h, w, c), exported.CLASS_NAMES
    model = load_model(path)
    return to_torch(model), model.input_shape, model.class_names


def images_nchw(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def load_data(args, input_shape):
    train = data.load(args.dataset, args.data_dir, split="train")
    test = data.load(args.dataset, args.data_dir, split="test")
    if tuple(train.images.shape[1:]) != tuple(input_shape):
        raise SystemExit(f"the model takes {input_shape} images, {args.dataset} has {train.images.shape[1:]}")
    limit = args.limit or len(train.labels)
    dataset = TensorDataset(images_nchw(train.images[:limit]), torch.from_numpy(train.labels[:limit]))
    held_out = images_nchw(test.images[: args.eval_images]), torch.from_numpy(test.labels[: args.eval_images])
    return dataset, held_out


def train_mode(net):
    """net.train(), except a leading input standardisation (a non-affine BatchNorm2d that
    convscope's export puts first), which must keep its stored mean and std."""
    net.train()
    first = net[0] if isinstance(net, nn.Sequential) and len(net) else None
    if isinstance(first, nn.BatchNorm2d) and not first.affine:
        first.eval()
    return net


def evaluate(body, held_out, device) -> float:
    body.eval()
    with torch.no_grad():
        images, labels = (t.to(device) for t in held_out)
        loss = nn.functional.cross_entropy(body(images), labels).item()
    train_mode(body)
    return loss


def train(args, ddp, loader, sampler, device, rank):
    """SGD steps until --steps or --epochs; returns the per-step training losses of this process."""
    optimizer = torch.optim.SGD(ddp.parameters(), lr=args.lr, momentum=args.momentum)
    total = args.steps or args.epochs * len(loader)
    losses = []
    for epoch in itertools.count():
        sampler.set_epoch(epoch)  # a new shuffle each epoch, the same on every process
        for images, labels in loader:
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(ddp(images.to(device)), labels.to(device))
            loss.backward()  # DDP all-reduces (averages) the gradients here
            optimizer.step()
            losses.append(loss.item())
            if rank == 0 and (len(losses) % 50 == 0 or len(losses) == total):
                print(f"step {len(losses)}/{total} loss {np.mean(losses[-50:]):.4f}", flush=True)
            if len(losses) >= total:
                return losses
    return losses


def save_results(args, net, input_shape, class_names, result, rank):
    from safetensors.torch import save_file

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(out / f"rank{rank}.safetensors"))
    (out / f"rank{rank}.json").write_text(json.dumps(result, indent=2))
    if rank == 0:
        model = from_torch(net.cpu().eval(), input_shape, class_names=class_names, name="ddp_trained")
        model.save(out / "model.convscope")
        print(f"wrote {out / 'model.convscope'} and rank*.safetensors / rank*.json", flush=True)


def main(argv=None):
    args = parse_args(argv)
    rank, world, device = setup(args.backend)
    torch.manual_seed(args.seed)
    net, input_shape, class_names = load_network(args.model)
    train_mode(net.to(device))
    # training uses the logits: a final Softmax is left out of the trained body (it has no weights)
    body = net[:-1] if isinstance(net[-1], nn.Softmax) else net
    ddp = DistributedDataParallel(body, device_ids=[device.index] if device.type == "cuda" else None)
    dataset, held_out = load_data(args, input_shape)
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=args.seed)
    loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, drop_last=True)
    if rank == 0:
        print(
            f"{world} process{'es' if world > 1 else ''} ({dist.get_backend()}, {device.type}), "
            f"{len(dataset)} images, {len(loader)} steps per epoch of {args.batch_size} x {world}",
            flush=True,
        )
    start = time.perf_counter()
    loss_before = evaluate(body, held_out, device)
    losses = train(args, ddp, loader, sampler, device, rank)
    loss_after = evaluate(body, held_out, device)
    if rank == 0:
        print(f"held-out loss {loss_before:.4f} -> {loss_after:.4f} in {time.perf_counter() - start:.1f}s")
    result = {
        "rank": rank,
        "world_size": world,
        "eval_loss_before": loss_before,
        "eval_loss_after": loss_after,
        "train_losses": losses,
    }
    dist.barrier()
    save_results(args, net, input_shape, class_names, result, rank)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
