"""`convscope bench`: the seed CNN's training and inference speed, convscope beside PyTorch.

Both engines get the same network with the same initial weights and the same random batch. Timed
blocks alternate convscope, torch, convscope, torch, ... (with a short idle pause before each, so one
engine's spinning worker threads do not slow the other) so that both see the same machine state;
warm-up steps are not timed; each figure is the median over `repeats` blocks. Peak memory (RSS) is
measured in fresh subprocesses, one per engine, each running 50 training steps at batch 64.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

TRAIN_CASES = [((28, 28, 1), 64), ((28, 28, 1), 256), ((32, 32, 3), 64), ((32, 32, 3), 256)]
INFER_BATCHES = (1, 64, 1000)
INPUTS = ((28, 28, 1), (32, 32, 3))
BLOCK_SECONDS = 0.25  # each timed block runs about this long
SETTLE_SECONDS = 0.15  # idle time before each block, so neither engine's spinning threads hurt the other
RSS_STEPS = 50


def shape_name(shape) -> str:
    return "x".join(str(d) for d in shape)


def random_batch(shape, batch, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((batch, *shape), dtype=np.float32), rng.integers(0, 10, batch)


class ConvscopeEngine:
    """Seed CNN + SGD with momentum in convscope."""

    name = "convscope"

    def __init__(self, shape, seed=0):
        from convscope.models import seed_cnn
        from convscope.optim import SGD

        self.model = seed_cnn(shape, 10, seed=seed).compile(SGD(lr=0.01, momentum=0.9))

    def train_step(self, x, y):
        self.model.train_step(x, y)

    def infer(self, x):
        return self.model.predict_proba(x)


class TorchEngine:
    """The same network and weights in PyTorch (NCHW), trained with torch.optim.SGD."""

    name = "torch"

    def __init__(self, shape, seed=0):
        import torch

        from convscope.interop.pytorch import to_torch
        from convscope.models import seed_cnn

        self.torch = torch
        self.model = to_torch(seed_cnn(shape, 10, seed=seed))[:-1]  # logits; the loss adds softmax
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        self.loss = torch.nn.CrossEntropyLoss()

    def _inputs(self, x, y=None):
        from convscope.interop.pytorch import images_to_torch

        return images_to_torch(x), None if y is None else self.torch.from_numpy(y)

    def train_step(self, x, y):
        tx, ty = self._inputs(x, y)
        self.optimizer.zero_grad(set_to_none=True)
        self.loss(self.model(tx), ty).backward()
        self.optimizer.step()

    def infer(self, x):
        with self.torch.inference_mode():
            return self.torch.softmax(self.model(self._inputs(x)[0]), dim=1).numpy()


def _time(run, steps) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        run()
    return time.perf_counter() - start


def _steps_per_block(runs, warmup) -> int:
    """Warm every engine up, then pick a step count giving blocks of about BLOCK_SECONDS."""
    slowest = max(_time(run, warmup) / warmup for run in runs)
    return max(1, round(BLOCK_SECONDS / max(slowest, 1e-6)))


def compare(runs: dict, batch: int, repeats: int, warmup: int = 3) -> dict:
    """Median images/s for each named callable, timed in alternating blocks."""
    steps = _steps_per_block(runs.values(), warmup)
    rates = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            # BLAS and OpenMP worker threads spin for a while after their last call; let them
            # go idle so that they do not steal a core from the other engine's timed block.
            time.sleep(SETTLE_SECONDS)
            rates[name].append(batch * steps / _time(run, steps))
    return {name: statistics.median(values) for name, values in rates.items()}


def _row(shape, batch, rates) -> dict:
    row = {"input": shape_name(shape), "batch": batch, "convscope_ips": round(rates["convscope"], 1)}
    if "torch" in rates:
        row["torch_ips"] = round(rates["torch"], 1)
        row["ratio"] = round(rates["convscope"] / rates["torch"], 3)
    return row


def _engines(shape, with_torch):
    engines = [ConvscopeEngine(shape)]
    if with_torch:
        engines.append(TorchEngine(shape))
    return engines


def bench_train(shape, batch, repeats, with_torch) -> dict:
    x, y = random_batch(shape, batch)
    runs = {e.name: (lambda e=e: e.train_step(x, y)) for e in _engines(shape, with_torch)}
    return _row(shape, batch, compare(runs, batch, repeats))


def bench_infer(shape, batch, repeats, with_torch) -> dict:
    x, _ = random_batch(shape, batch)
    runs = {e.name: (lambda e=e: e.infer(x)) for e in _engines(shape, with_torch)}
    return _row(shape, batch, compare(runs, batch, repeats))


def peak_rss_worker(engine_name: str) -> float:
    """Run RSS_STEPS training steps at batch 64 on gray 28x28 and return this process's peak RSS in MB."""
    engine = {"convscope": ConvscopeEngine, "torch": TorchEngine}[engine_name]((28, 28, 1))
    x, y = random_batch((28, 28, 1), 64)
    for _ in range(RSS_STEPS):
        engine.train_step(x, y)
    return peak_rss_of_this_process()


def peak_rss_of_this_process() -> float:
    """Peak resident memory in MB. /proc's VmHWM starts afresh at exec; ru_maxrss may carry the
    parent's peak across fork + exec, so it is only the fallback off Linux."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _subprocess_float(code: str) -> float:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def peak_rss_mb(engine_name: str) -> float:
    return round(
        _subprocess_float(
            f"from convscope.bench import peak_rss_worker; print(peak_rss_worker({engine_name!r}))"
        ),
        1,
    )


def import_seconds(module: str, repeats: int = 5) -> float:
    """Median time of `import module` in a fresh interpreter (the interpreter's own start excluded)."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    return round(statistics.median(_subprocess_float(code) for _ in range(repeats)), 3)


def torch_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def run_bench(repeats=5, with_torch=None, quick=False, log=print) -> dict:
    """Every measurement of the benchmark as one dict (the --json shape)."""
    with_torch = torch_available() if with_torch is None else with_torch
    if with_torch:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
    train_cases = TRAIN_CASES[:1] if quick else TRAIN_CASES
    infer_cases = [((28, 28, 1), 64)] if quick else [(s, b) for s in INPUTS for b in INFER_BATCHES]
    result = {"machine": {"cpus": os.cpu_count(), "numpy": np.__version__}, "repeats": repeats}
    if with_torch:
        result["machine"]["torch"] = torch.__version__
        result["machine"]["torch_threads"] = torch.get_num_threads()
    result["train"] = []
    for shape, batch in train_cases:
        result["train"].append(bench_train(shape, batch, repeats, with_torch))
        log(format_row("train", result["train"][-1]))
    result["infer"] = []
    for shape, batch in infer_cases:
        result["infer"].append(bench_infer(shape, batch, repeats, with_torch))
        log(format_row("infer", result["infer"][-1]))
    engines = ["convscope", "torch"] if with_torch else ["convscope"]
    result["peak_rss_mb"] = {name: peak_rss_mb(name) for name in engines}
    result["import_s"] = {name: import_seconds(name) for name in engines}
    log(
        f"peak RSS of {RSS_STEPS} training steps at batch 64 (MB): "
        + ", ".join(f"{k} {v}" for k, v in result["peak_rss_mb"].items())
    )
    log("import time (s): " + ", ".join(f"{k} {v}" for k, v in result["import_s"].items()))
    return result


def format_row(kind: str, row: dict) -> str:
    text = f"{kind:<6}{row['input']:>9}  batch {row['batch']:>5}  "
    text += f"convscope {row['convscope_ips']:>9.0f} img/s"
    if "torch_ips" in row:
        text += f"  torch {row['torch_ips']:>9.0f} img/s  ratio {row['ratio']:.2f}"
    return text


def add_arguments(parser: argparse.ArgumentParser):
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--repeats", type=int, default=5, help="timed blocks per engine and case (>= 1)")
    parser.add_argument("--quick", action="store_true", help="one training and one inference case only")
    parser.add_argument("--no-torch", action="store_true", help="measure convscope alone")


def main_from_args(args) -> dict:
    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    if not args.no_torch and not torch_available():
        print("torch is not installed: measuring convscope alone (pip install 'convscope[torch]')")
    print(f"seed CNN, median images/s over {args.repeats} alternating blocks, {os.cpu_count()} cores")
    result = run_bench(repeats=args.repeats, with_torch=False if args.no_torch else None, quick=args.quick)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m convscope.bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    main_from_args(parser.parse_args())
