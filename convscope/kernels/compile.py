"""How the kernels are compiled: ahead of time into a library (convscope.kernels.aot) where one was
built, else by Numba at first use. Numba is imported here and only here, and only on that fallback.

A kernel is a plain Python loop nest (`@jit`), usually made by a factory (`@factory`) that fixes its
channel counts, so that LLVM knows the loop lengths. Calling a `Kernel` looks up the compiled code for
the types of its arguments: the ahead-of-time library's (no Numba, no LLVM in the process) when it has
them, else `numba.njit`'s. Both compile the same function with the same settings, and each setting is
safe for these kernels:
- `noalias`: no two array arguments of a kernel ever share memory (every output is a fresh array,
  and in-place kernels take one array), so LLVM may keep values in registers across stores. Numba
  has the flag but does not expose it to `njit`; `_allow_noalias` adds the option.
- the SLP vectoriser (off in Numba by default): it turns the fixed-length channel loops, unrolled,
  into AVX instructions.
- fastmath 'contract' only: a * b + c may become one fused multiply-add (one rounding instead of
  two); nothing is reordered, so results are deterministic and within an ulp per term of the
  reference.
- the GIL is released: the thread shards of convscope.parallel run kernels at the same time.
JIT-compiled code is cached on disk (`cache=True`): beside the package when it is writable, else in
the user's cache folder (Numba's rules; NUMBA_CACHE_DIR overrides both).
"""

import functools
import threading

import numpy as np

OPTIONS = {"cache": True, "nogil": True, "fastmath": {"contract"}, "error_model": "numpy"}

_NUMBA_TYPES = {np.dtype(name): name for name in ("float32", "float64", "int64", "int32", "uint8")}
_NUMBA_TYPES[np.dtype(bool)] = "boolean"  # numpy's name for it is 'bool'
_SCALAR_TYPES = {bool: "boolean", int: "int64", float: "float64"}


def argument_type(value) -> str:
    """The Numba type of one kernel argument, spelt as in a signature: 'float32[:, ::1]' for a
    C-contiguous 2-D float32 array ('float32[:, :]' for any other layout), 'int64', 'boolean', ..."""
    if isinstance(value, np.ndarray):
        name = _NUMBA_TYPES.get(value.dtype)
        if name is None or value.ndim == 0:
            kinds = ", ".join(sorted(_NUMBA_TYPES.values()))
            raise TypeError(f"kernel arrays need 1 or more axes and a type of {kinds}, got {value.dtype}")
        axes = [":"] * value.ndim
        if value.flags.c_contiguous:
            axes[-1] = "::1"
        return f"{name}[{', '.join(axes)}]"
    if isinstance(value, np.generic):
        return _NUMBA_TYPES[value.dtype]
    for kind, name in _SCALAR_TYPES.items():
        if type(value) is kind:
            return name
    raise TypeError(f"unsupported kernel argument of type {type(value).__name__}")


def _types_key(args) -> tuple:
    """A cheap key that tells apart every two argument tuples of different Numba types (a kernel call
    computes it every time, so it avoids argument_type's strings)."""
    key = []
    for value in args:
        if type(value) is np.ndarray:
            key += (value.dtype, value.ndim, value.flags.c_contiguous)
        else:
            key.append(type(value))
    return tuple(key)


class Kernel:
    """A compiled loop nest, callable like the function it wraps (kernels return nothing: they write
    into arrays they are given).

    `origin` names it in the ahead-of-time library: (module, factory, factory arguments), or (module,
    function name, None) for a kernel defined at module level; None for a closure made outside a
    `factory` (then it always compiles just in time). `signatures` records the
    argument types of every call (what an ahead-of-time build compiles)."""

    def __init__(self, function):
        self.function = function
        # A closure's constants are part of the kernel: only its factory can name it (see `factory`).
        self.origin = None if function.__closure__ else (function.__module__, function.__name__, None)
        self.signatures: set[tuple[str, ...]] = set()
        self._compiled: dict[tuple, object] = {}
        self._dispatcher = None
        self._lock = threading.Lock()
        functools.update_wrapper(self, function)
        _MADE.append(self)

    def __call__(self, *args):
        key = _types_key(args)
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._compile(key, args)
        compiled(*args)

    def _compile(self, key: tuple, args: tuple):
        """The library's build for these argument types, else Numba's (compiled at its first call)."""
        from convscope.kernels import aot

        with self._lock:
            compiled = self._compiled.get(key)
            if compiled is None:
                types = tuple(map(argument_type, args))
                compiled = aot.lookup(self, types) or self.dispatcher()
                self.signatures.add(types)
                self._compiled[key] = compiled
        return compiled

    def dispatcher(self):
        """numba.njit of the function with OPTIONS (imports Numba)."""
        if self._dispatcher is None:
            self._dispatcher = _numba_jit(self.function)
        return self._dispatcher


_MADE: list[Kernel] = []  # every Kernel made in this process, for an ahead-of-time build to record


def made_kernels() -> list[Kernel]:
    return list(_MADE)


def jit(function) -> Kernel:
    """A Kernel of `function`, compiled with OPTIONS at first call."""
    return Kernel(function)


def factory(make_kernel):
    """Cache a kernel factory (one Kernel per argument tuple) and mark each Kernel with its origin, so
    that an ahead-of-time build can make it again."""

    @functools.cache
    @functools.wraps(make_kernel)
    def make(*args):
        kernel = make_kernel(*args)
        kernel.origin = (make_kernel.__module__, make_kernel.__name__, args)
        return kernel

    return make


def _allow_noalias(numba) -> dict:
    """{"noalias": True} as an njit option, mapped onto Numba's own `noalias` compiler flag; {} (slower
    kernels, same results) on a Numba without that flag."""
    from numba.core.compiler import Flags
    from numba.core.cpu import CPUTargetOptions
    from numba.core.options import TargetOptions

    if not hasattr(Flags, "noalias"):
        return {}
    if not hasattr(CPUTargetOptions, "noalias"):
        CPUTargetOptions.noalias = TargetOptions.Mapping("noalias")
    return {"noalias": True}


def configure_numba():
    """Import Numba with the settings above (the SLP vectoriser on); returns (numba, njit options)."""
    import numba
    from numba.core import config

    config.SLP_VECTORIZE = 1
    return numba, {**OPTIONS, **_allow_noalias(numba)}


def _numba_jit(function):
    numba, options = configure_numba()
    return numba.njit(**options)(function)
