"""`convscope bench`: training and inference speed, convscope beside PyTorch and onnxruntime.

Every engine gets the same network with the same initial weights and the same random batch: the seed
CNN (gray 28x28 and colour 32x32) and small_vgg (colour 32x32, training). The measurement runs in
rounds; each round times blocks of about BLOCK_SECONDS in the order A, B, (C,) A, B, (C) (convscope,
torch, onnxruntime for inference), with a short idle pause before each block so that one engine's
spinning worker threads do not slow the next, then REWARM_SECONDS of untimed steps of the engine
about to be timed: after the pause and the other engine's work, its first ~50 ms run up to 1.6x
slower (cold caches, the processor's clock winding back up), a transient that is not the engine's
speed. A round's ratio is convscope's mean rate over torch's (or onnxruntime's) in that round; the
table gives each engine's median rate over all blocks and the median of the per-round ratios with
their range, which is steadier on a shared machine than a ratio of two medians. Warm-up steps (and
the kernels' first compile) are never timed. Peak memory (RSS) is measured in fresh subprocesses,
one per engine, each running 50 training steps at batch 64.
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

TRAIN_CASES = [
    ("seed_cnn", (28, 28, 1), 64),
    ("seed_cnn", (28, 28, 1), 256),
    ("seed_cnn", (32, 32, 3), 64),
    ("seed_cnn", (32, 32, 3), 256),
    ("small_vgg", (32, 32, 3), 64),
    ("small_vgg", (32, 32, 3), 256),
]
INFER_CASES = [("seed_cnn", shape, batch) for shape in ((28, 28, 1), (32, 32, 3)) for batch in (1, 64, 1000)]
BLOCK_SECONDS = 0.25  # each timed block runs about this long
SETTLE_SECONDS = 0.15  # idle time before each block, so neither engine's spinning threads hurt the other
REWARM_SECONDS = 0.08  # untimed steps after the pause, before each block
WARMUP_STEPS = 3
RSS_STEPS = 50


def shape_name(shape) -> str:
    return "x".join(str(d) for d in shape)


def random_batch(shape, batch, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((batch, *shape), dtype=np.float32), rng.integers(0, 10, batch)


def build_model(name: str, shape, seed=0):
    from convscope.models import seed_cnn, small_vgg

    return {"seed_cnn": seed_cnn, "small_vgg": small_vgg}[name](shape, 10, seed=seed)


class ConvscopeEngine:
    """The model + SGD with momentum in convscope."""

    name = "convscope"

    def __init__(self, model_name, shape, seed=0):
        from convscope.optim import SGD

        self.model = build_model(model_name, shape, seed).compile(SGD(lr=0.01, momentum=0.9))
        self.rng = np.random.default_rng(seed)

    def train_step(self, x, y):
        self.model.train_step(x, y, rng=self.rng)

    def infer(self, x):
        return self.model.predict_proba(x)


class TorchEngine:
    """The same network and weights in PyTorch (NCHW), trained with torch.optim.SGD."""

    name = "torch"

    def __init__(self, model_name, shape, seed=0):
        import torch

        from convscope.interop.pytorch import to_torch

        self.torch = torch
        self.model = to_torch(build_model(model_name, shape, seed))[:-1]  # logits; the loss adds softmax
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        self.loss = torch.nn.CrossEntropyLoss()

    def _inputs(self, x, y=None):
        from convscope.interop.pytorch import images_to_torch

        return images_to_torch(x), None if y is None else self.torch.from_numpy(y)

    def train_step(self, x, y):
        self.model.train()
        tx, ty = self._inputs(x, y)
        self.optimizer.zero_grad(set_to_none=True)
        self.loss(self.model(tx), ty).backward()
        self.optimizer.step()

    def infer(self, x):
        self.model.eval()
        with self.torch.inference_mode():
            return self.torch.softmax(self.model(self._inputs(x)[0]), dim=1).numpy()


class OnnxRuntimeEngine:
    """The same model exported through convscope.interop (NHWC input, softmax output), run by
    onnxruntime's CPU provider with as many intra-op threads as cores."""

    name = "onnxruntime"

    def __init__(self, model_name, shape, seed=0):
        import onnxruntime

        from convscope.interop.onnx_export import to_onnx

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = os.cpu_count() or 1
        options.inter_op_num_threads = 1
        proto = to_onnx(build_model(model_name, shape, seed), layout="nhwc")
        self.session = onnxruntime.InferenceSession(
            proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name

    def infer(self, x):
        return self.session.run(None, {self.input_name: x})[0]


def _time(run, steps) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        run()
    return time.perf_counter() - start


def _run_for(run, seconds):
    """Call `run` until `seconds` have passed (at least once)."""
    end = time.perf_counter() + seconds
    run()
    while time.perf_counter() < end:
        run()


def _steps_per_block(runs) -> int:
    """Warm every engine up (untimed), then time a few more steps of each to size the blocks."""
    for run in runs:
        _time(run, WARMUP_STEPS)
    slowest = max(_time(run, WARMUP_STEPS) / WARMUP_STEPS for run in runs)
    return max(1, round(BLOCK_SECONDS / max(slowest, 1e-6)))


def compare(runs: dict, batch: int, rounds: int) -> dict:
    """Rates (images/s) of every named callable, timed in rounds of A, B, .., A, B, .. blocks:
    {"rates": {name: [one rate per block]}, "round_rates": [{name: mean rate in that round}]}."""
    steps = _steps_per_block(runs.values())
    rates = {name: [] for name in runs}
    round_rates = []
    for _ in range(rounds):
        this_round = {name: [] for name in runs}
        for _ in range(2):
            for name, run in runs.items():
                # BLAS and OpenMP worker threads spin for a while after their last call; let them
                # go idle so that they do not steal a core from the next engine's timed block.
                time.sleep(SETTLE_SECONDS)
                _run_for(run, REWARM_SECONDS)
                this_round[name].append(batch * steps / _time(run, steps))
        for name, values in this_round.items():
            rates[name].extend(values)
        round_rates.append({name: statistics.fmean(values) for name, values in this_round.items()})
    return {"rates": rates, "round_rates": round_rates}


def _ratio(round_rates, peer: str) -> tuple[float, list[float]]:
    """The median over the rounds of convscope's rate / the peer's, and [lowest, highest]."""
    ratios = [r["convscope"] / r[peer] for r in round_rates]
    return round(statistics.median(ratios), 3), [round(min(ratios), 3), round(max(ratios), 3)]


def _row(model_name, shape, batch, measured) -> dict:
    rates = {name: statistics.median(values) for name, values in measured["rates"].items()}
    row = {"model": model_name, "input": shape_name(shape), "batch": batch}
    row["convscope_ips"] = round(rates["convscope"], 1)
    for peer, key, ratio in (("torch", "torch_ips", "ratio"), ("onnxruntime", "ort_ips", "ratio_ort")):
        if peer in rates:
            row[key] = round(rates[peer], 1)
            row[ratio], row[f"{ratio}_spread"] = _ratio(measured["round_rates"], peer)
    return row


def bench_train(model_name, shape, batch, repeats, with_torch) -> dict:
    x, y = random_batch(shape, batch)
    engines = [ConvscopeEngine(model_name, shape)] + ([TorchEngine(model_name, shape)] if with_torch else [])
    runs = {e.name: (lambda e=e: e.train_step(x, y)) for e in engines}
    return _row(model_name, shape, batch, compare(runs, batch, repeats))


def bench_infer(model_name, shape, batch, repeats, with_torch, with_ort=False) -> dict:
    x, _ = random_batch(shape, batch)
    engines = [ConvscopeEngine(model_name, shape)]
    engines += [TorchEngine(model_name, shape)] if with_torch else []
    engines += [OnnxRuntimeEngine(model_name, shape)] if with_ort else []
    runs = {e.name: (lambda e=e: e.infer(x)) for e in engines}
    return _row(model_name, shape, batch, compare(runs, batch, repeats))


def peak_rss_worker(engine_name: str) -> float:
    """Run RSS_STEPS training steps at batch 64 on gray 28x28 and return this process's peak RSS in MB."""
    engine = {"convscope": ConvscopeEngine, "torch": TorchEngine}[engine_name]("seed_cnn", (28, 28, 1))
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


def _subprocess_float(code: str, env=None) -> float:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
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


def available(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def blas_kernel(env=None) -> str | None:
    """The kernel ('architecture') numpy's OpenBLAS runs, as threadpoolctl reports it: in this
    process, or in a fresh one with the environment `env`."""
    if env is not None:
        code = "from convscope.bench import blas_kernel; print(blas_kernel())"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        found = out.stdout.strip()
        return None if found in ("", "None") else found
    import numpy  # noqa: F401  (loads OpenBLAS)
    from threadpoolctl import threadpool_info

    kernels = [i.get("architecture") for i in threadpool_info() if i.get("internal_api") == "openblas"]
    return kernels[0] if kernels else None


def blas_note(log=print) -> dict:
    """Which BLAS kernel numpy runs; a warning when OPENBLAS_CORETYPE forces an older one than the CPU's."""
    kernel = blas_kernel()
    info = {"blas_kernel": kernel, "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE")}
    log(f"numpy's BLAS kernel: {kernel or 'not OpenBLAS'}")
    if info["openblas_coretype"]:
        unset = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
        native = blas_kernel(env=unset)
        info["blas_kernel_native"] = native
        if native and native != kernel:
            log(
                f"warning: OPENBLAS_CORETYPE={info['openblas_coretype']} forces the {kernel} kernel; this "
                f"CPU runs {native} without it. Quote figures from `env -u OPENBLAS_CORETYPE -u "
                "OPENBLAS_L2_SIZE convscope bench`"
            )
    return info


def kernel_library_note(log=print) -> str | None:
    """The ahead-of-time kernel library this process loads (convscope.kernels.aot), or None."""
    from convscope.kernels import aot

    found = aot.library()
    if found is None:
        log("kernels: no ahead-of-time library (python -m convscope.kernels.aot builds one): they compile at "
            "first use, and the process loads Numba and LLVM")
        return None
    path = str(found.folder / found.manifest["file"])
    log(f"kernels: ahead-of-time library {path} ({len(found.manifest['kernels'])} kernels)")
    return path


def run_bench(repeats=5, with_torch=None, with_ort=None, quick=False, log=print) -> dict:
    """Every measurement of the benchmark as one dict (the --json shape)."""
    from convscope import kernels

    with_torch = available("torch") if with_torch is None else with_torch
    with_ort = available("onnxruntime") and available("onnx") if with_ort is None else with_ort
    if with_torch:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
    train_cases = TRAIN_CASES[:1] if quick else TRAIN_CASES
    infer_cases = [("seed_cnn", (28, 28, 1), 64)] if quick else INFER_CASES
    from convscope.kernels.aot import processor_name

    processor = processor_name()
    log(f"processor: {processor}")
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "processor": processor,
            "numpy": np.__version__,
            **blas_note(log),
        },
        "kernels": kernels.backend(),
        "kernel_library": kernel_library_note(log) if kernels.backend() == "numba" else None,
        "rounds": repeats,
    }
    if with_torch:
        result["machine"]["torch"] = torch.__version__
        result["machine"]["torch_threads"] = torch.get_num_threads()
    if with_ort:
        import onnxruntime

        result["machine"]["onnxruntime"] = onnxruntime.__version__
    result["train"] = []
    for model_name, shape, batch in train_cases:
        result["train"].append(bench_train(model_name, shape, batch, repeats, with_torch))
        log(format_row("train", result["train"][-1]))
    result["infer"] = []
    for model_name, shape, batch in infer_cases:
        result["infer"].append(bench_infer(model_name, shape, batch, repeats, with_torch, with_ort))
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
    text = f"{kind:<6}{row['input']:>9}  batch {row['batch']:>5}  {row['model']:<9}"
    text += f"  convscope {row['convscope_ips']:>8.0f}"
    for peer, key, ratio in (("torch", "torch_ips", "ratio"), ("ort", "ort_ips", "ratio_ort")):
        if key in row:
            low, high = row[f"{ratio}_spread"]
            text += f"  {peer} {row[key]:>8.0f}  x{row[ratio]:.2f} ({low:.2f}-{high:.2f})"
    return text + "  img/s"


def add_arguments(parser: argparse.ArgumentParser):
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--repeats", type=int, default=5, help="rounds of A/B/A/B blocks per case (>= 1)")
    parser.add_argument("--quick", action="store_true", help="one training and one inference case only")
    parser.add_argument("--no-torch", action="store_true", help="measure without PyTorch")
    parser.add_argument("--no-ort", action="store_true", help="measure inference without onnxruntime")


def main_from_args(args) -> dict:
    from convscope import kernels

    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    if not args.no_torch and not available("torch"):
        print("torch is not installed: measuring without it (pip install 'convscope[torch]')")
    print(
        f"median images/s; x: convscope's speed over the peer's, median of {args.repeats} A/B rounds "
        f"(range); {os.cpu_count()} cores; kernels: {kernels.backend()}"
    )
    result = run_bench(
        repeats=args.repeats,
        with_torch=False if args.no_torch else None,
        with_ort=False if args.no_ort else None,
        quick=args.quick,
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m convscope.bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    main_from_args(parser.parse_args())
