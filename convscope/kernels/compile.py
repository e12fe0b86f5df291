"""How the kernels are compiled: Numba, imported here and only here (lazily, by the plan).

Three settings make Numba's loops as fast as hand-vectorised code, and each is safe for these kernels:
- `noalias`: no two array arguments of a kernel ever share memory (every output is a fresh array,
  and in-place kernels take one array), so LLVM may keep values in registers across stores. Numba
  has the flag but does not expose it to `njit`; `_allow_noalias` adds the option.
- the SLP vectoriser (off in Numba by default): it turns the fixed-length channel loops, unrolled,
  into AVX instructions.
- fastmath 'contract' only: a * b + c may become one fused multiply-add (one rounding instead of
  two); nothing is reordered, so results are deterministic and within an ulp per term of the
  reference.
Compiled code is cached on disk (`cache=True`): beside the package when it is writable, else in the
user's cache folder (Numba's rules; NUMBA_CACHE_DIR overrides both).
"""

import numba
from numba.core import config
from numba.core.compiler import Flags
from numba.core.cpu import CPUTargetOptions
from numba.core.options import TargetOptions


def _allow_noalias() -> dict:
    """{"noalias": True} as an njit option, mapped onto Numba's own `noalias` compiler flag; {} (slower
    kernels, same results) on a Numba without that flag."""
    if not hasattr(Flags, "noalias"):
        return {}
    if not hasattr(CPUTargetOptions, "noalias"):
        CPUTargetOptions.noalias = TargetOptions.Mapping("noalias")
    return {"noalias": True}


config.SLP_VECTORIZE = 1
OPTIONS = {
    "cache": True,
    "nogil": True,  # the thread shards of convscope.parallel run kernels at the same time
    "fastmath": {"contract"},
    "error_model": "numpy",
    **_allow_noalias(),
}


def jit(function):
    """numba.njit with OPTIONS."""
    return numba.njit(**OPTIONS)(function)
