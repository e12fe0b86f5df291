"""Kernels compiled ahead of time: one native library, built once, loaded without Numba or LLVM.

JIT compilation costs a process LLVM (~100 MB of resident memory, most of it LLVM's own code) and, the
first time, seconds of compiling. So `python -m convscope.kernels.aot` (which `make` runs after
installing) runs the built-in models' training steps and predictions once under Numba's JIT, records
every kernel and argument types they called, and compiles those with Numba's ahead-of-time compiler
(numba.pycc) into one Python extension beside a manifest. Processes then find their kernels there
(`lookup`): they never import Numba unless a model calls a kernel or argument types the library
lacks, which then compile just in time as before.

The library lives in CONVSCOPE_KERNEL_LIBRARY when set ('none' turns it off), else in `_aot/` beside
this package when that is writable, else in the user's cache folder. Its manifest names, for every
kernel, the hash of the source it was compiled from: an edited kernel is not taken from the library
until it is built again. It is compiled for this machine's processor (like Numba's JIT) and is used
only on a processor with the same features.
"""

import argparse
import hashlib
import importlib.machinery
import importlib.util
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

FORMAT = 1
MANIFEST = "library.json"
_ENVIRONMENT_VARIABLE = "CONVSCOPE_KERNEL_LIBRARY"


def library_folder() -> Path | None:
    """Where the library is read and built: CONVSCOPE_KERNEL_LIBRARY, or None when that is 'none';
    else `_aot/` beside this package if writable; else the user's cache folder."""
    chosen = os.environ.get(_ENVIRONMENT_VARIABLE)
    if chosen:
        return None if chosen.strip().lower() == "none" else Path(chosen)
    package = Path(__file__).resolve().parent
    if os.access(package, os.W_OK):
        return package / "_aot"
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "convscope" / "kernels"


def _cpuinfo_lines() -> list[str]:
    """The first processor's lines of /proc/cpuinfo, stripped ([] where there is none)."""
    lines = []
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if not line.strip():
                    break
                lines.append(line.strip())
    except OSError:
        pass
    return lines


def processor_key() -> str:
    """What the compiled code depends on in the machine: the processor's model and features."""
    text = platform.machine() + platform.processor()
    keys = ("flags", "model name", "Features", "CPU part")
    text += "".join(line for line in _cpuinfo_lines() if line.startswith(keys))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def processor_name() -> str:
    """The processor in words, e.g. 'AMD EPYC (family 25, model 17; AVX-512)': the same cores can run
    a kernel at very different speeds from one generation to the next."""
    fields = {}
    for line in _cpuinfo_lines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or platform.machine()
    flags = fields.get("flags", "").split()
    details = [f"family {fields['cpu family']}, model {fields['model']}"] if "cpu family" in fields else []
    details += [label for flag, label in (("avx512f", "AVX-512"), ("avx2", "AVX2")) if flag in flags][:1]
    return f"{name} ({'; '.join(details)})" if details else name


def _platform() -> dict:
    return {
        "processor": processor_key(),
        "numpy": np.__version__.split(".")[0],
        "extension_suffix": importlib.machinery.EXTENSION_SUFFIXES[0],
    }


_sources: dict[str, str] = {}


def source_hash(module: str) -> str:
    """sha256 of a kernel module's source (with compile.py's, whose settings every kernel shares)."""
    if module not in _sources:
        digest = hashlib.sha256()
        for name in (module, "convscope.kernels.compile"):
            digest.update(Path(sys.modules[name].__file__).read_bytes())
        _sources[module] = digest.hexdigest()[:16]
    return _sources[module]


def _encode(value):
    if isinstance(value, type) and issubclass(value, np.generic):
        return {"dtype": np.dtype(value).name}
    return value


def entry_key(origin, types) -> str:
    """The library's name for one kernel built for one tuple of argument types."""
    module, name, args = origin
    made = "" if args is None else json.dumps([_encode(a) for a in args])
    return f"{module}.{name}{made}({', '.join(types)})"


class Library:
    """A built library: its manifest, and the extension module, imported at the first lookup that needs it."""

    def __init__(self, folder: Path, manifest: dict):
        self.folder = folder
        self.manifest = manifest
        self._module = None

    @classmethod
    def open(cls, folder: Path | None):
        """The library in `folder`, or None when there is none usable on this machine."""
        if folder is None:
            return None
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            return None
        if manifest.get("platform") != _platform() or not (folder / str(manifest.get("file"))).is_file():
            return None
        return cls(folder, manifest)

    def function(self, origin, types):
        """The compiled function for this kernel and argument types, or None."""
        entry = self.manifest["kernels"].get(entry_key(origin, types))
        if entry is None or entry["source"] != source_hash(origin[0]):
            return None
        if self._module is None:
            path = self.folder / self.manifest["file"]
            spec = importlib.util.spec_from_file_location(self.manifest["module"], path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            self._module = module
        return getattr(self._module, entry["export"])


_opened: list = []  # [Library or None] once this process has looked
_opening = threading.Lock()


def library() -> Library | None:
    """This process's library (opened once)."""
    with _opening:
        if not _opened:
            _opened.append(Library.open(library_folder()))
    return _opened[0]


def lookup(kernel, types):
    """The ahead-of-time build of `kernel` for argument `types`, or None (then Numba compiles it)."""
    found = library() if kernel.origin is not None else None
    return None if found is None else found.function(kernel.origin, types)


# --- building -------------------------------------------------------------------------------------


CATALOGUE = ("seed:28x28x1", "seed:32x32x3", "seed:8x8x1", "small-vgg:32x32x3", "resnet20:32x32x3")


def parse_case(text: str) -> tuple:
    """'seed:28x28x1' -> (the model builder `convscope train --model seed` uses, (28, 28, 1))."""
    from convscope.models import MODELS

    name, _, shape = text.partition(":")
    try:
        dims = tuple(int(d) for d in shape.split("x"))
        if name not in MODELS or len(dims) != 3 or min(dims) < 1:
            raise ValueError
    except ValueError:
        raise ValueError(
            f"a case is MODEL:HxWxC with MODEL one of {', '.join(MODELS)}, e.g. seed:28x28x1; got {text!r}"
        ) from None
    return MODELS[name], dims


def record_catalogue(cases=CATALOGUE, log=print) -> list:
    """Run each case's model (training steps with SGD and Adam, predictions) under Numba's JIT; the
    kernels they called, each with the argument types it was called with."""
    from convscope.kernels import compile as kernel_compile
    from convscope.kernels import using
    from convscope.optim import SGD, Adam

    rng = np.random.default_rng(0)
    with using("numba"):
        for case in cases:
            build, shape = parse_case(case)
            start = time.perf_counter()
            for optimizer in (SGD(lr=0.01, momentum=0.9), Adam(1e-3)):
                model = build(shape, 10, seed=0).compile(optimizer)
                for batch in (64, 8):
                    x = rng.random((batch, *shape), dtype=np.float32)
                    model.train_step(x, rng.integers(0, 10, batch), rng=rng)
            for batch in (1, 40):
                model.predict_proba(rng.random((batch, *shape), dtype=np.float32))
            log(f"  ran {case} ({time.perf_counter() - start:.1f} s)")
    return [k for k in kernel_compile.made_kernels() if k.signatures and k.origin is not None]


def _ahead_of_time_flags(configure):
    """numba.pycc compiles with a plain Flags(); this subclass gives it the JIT's OPTIONS."""
    numba, options = configure()
    from numba.core import cpu
    from numba.core.compiler import Flags

    class KernelFlags(Flags):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.release_gil = options["nogil"]
            self.fastmath = cpu.FastMathOptions(options["fastmath"])
            self.error_model = options["error_model"]
            if options.get("noalias"):
                self.noalias = True

    return KernelFlags


def build(folder: Path | None = None, cases=CATALOGUE, log=print) -> Path:
    """Record the catalogue's kernels and compile them into a library in `folder` (default:
    library_folder()); returns the manifest's path. Replaces the library there atomically."""
    import warnings

    from numba.core.errors import NumbaPendingDeprecationWarning

    from convscope.kernels.compile import configure_numba

    folder = Path(folder) if folder is not None else library_folder()
    if folder is None:
        raise ValueError(f"{_ENVIRONMENT_VARIABLE}=none: no folder to build the kernel library in")
    _opened[:] = [None]  # this process records on Numba's JIT, not an older library
    start = time.perf_counter()
    log("recording the kernels of the built-in models (Numba JIT)")
    kernels = record_catalogue(cases, log)
    entries = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NumbaPendingDeprecationWarning)
        from numba.pycc import CC
        from numba.pycc import compiler as pycc_compiler

    pycc_compiler.Flags = _ahead_of_time_flags(configure_numba)
    stamp = hashlib.sha256(str(time.time_ns()).encode()).hexdigest()[:10]
    module = f"convscope_kernels_{stamp}"
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as work:
        cc = CC(module)
        cc.output_dir = work
        cc.target_cpu = "host"
        for kernel in kernels:
            for types in sorted(kernel.signatures):
                export = f"k{len(entries)}"
                cc.export(export, f"none({', '.join(types)})")(kernel.function)
                entries[entry_key(kernel.origin, types)] = {
                    "export": export,
                    "source": source_hash(kernel.origin[0]),
                }
        log(f"compiling {len(entries)} kernels ahead of time")
        cc.compile()
        built = Path(work) / cc.output_file
        os.replace(built, folder / built.name)
    seconds = round(time.perf_counter() - start, 1)
    manifest = {
        "format": FORMAT,
        "platform": _platform(),
        "module": module,
        "file": built.name,
        "built_with": {"numba": sys.modules["numba"].__version__, "seconds": seconds},
        "kernels": entries,
    }
    _replace_manifest(folder, manifest)
    log(f"kernel library: {folder / built.name} ({len(entries)} kernels, {seconds} s)")
    return folder / MANIFEST


def _replace_manifest(folder: Path, manifest: dict) -> None:
    """Write the manifest atomically, then remove the libraries it no longer names."""
    partial = folder / (MANIFEST + ".partial")
    partial.write_text(json.dumps(manifest, indent=1))
    os.replace(partial, folder / MANIFEST)
    for old in folder.glob("convscope_kernels_*"):
        if old.name != manifest["file"]:
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m convscope.kernels.aot",
        description="Compile the built-in models' kernels ahead of time into a library that processes "
        "load without Numba (see the module's docstring).",
    )
    parser.add_argument("--folder", type=Path, default=None, help="where to build (default: %(default)s, "
                        "meaning CONVSCOPE_KERNEL_LIBRARY, else beside the package, else the user cache)")
    parser.add_argument(
        "--case",
        action="append",
        metavar="MODEL:HxWxC",
        help=f"a model and input shape whose kernels to compile (repeatable; default: {' '.join(CATALOGUE)})",
    )
    parser.add_argument("--show", action="store_true", help="print the library in use and exit")
    args = parser.parse_args(argv)
    try:
        cases = tuple(args.case or CATALOGUE)
        [parse_case(case) for case in cases]
    except ValueError as error:
        parser.error(str(error))
    if args.show:
        found = Library.open(args.folder or library_folder())
        if found is None:
            print(f"no usable kernel library in {args.folder or library_folder()}")
            return 1
        print(f"{found.folder / found.manifest['file']}: {len(found.manifest['kernels'])} kernels")
        return 0
    build(args.folder, cases)
    return 0


if __name__ == "__main__":
    sys.exit(main())
