"""Load an optimized CBLAS into the process before MLX does.

The Linux `mlx-cpu` wheel links the reference BLAS (~3.6 GFLOP/s for float32
matmul here). MLX resolves `cblas_sgemm` dynamically, so a CBLAS opened with
RTLD_GLOBAL *before* `mlx.core` is imported wins the symbol lookup and float32
matmuls run ~50x faster. Loading it after `mlx.core` is imported does nothing,
which is why `locomlx/__init__.py` calls `preload()` before anything else.

Lookup order: $LOCOMLX_BLAS (a library path, or `none` to skip), pip `mkl`'s
`libmkl_rt`, `ctypes.util.find_library("openblas")`, then the usual Debian and
RHEL paths. Missing BLAS is a warning, never an error: MLX still works, slowly.

Ranks of one `mlx.launch` run that share a host share its cores: each gets its share of BLAS threads
(unless the thread count is set), since MKL's and OpenBLAS's spinning threads slow each other down many
times over when they number more than the cores (measured: 48 s against 1 s for a tiny training run).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import json
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "LOCOMLX_BLAS"

_SYSTEM_PATHS = [
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblasp.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
    "/usr/local/lib/libopenblas.so.0",
]

INSTALL_HINT = "install Debian's libopenblas0-pthread (apt-get install libopenblas0-pthread)"


@dataclass
class BlasStatus:
    """What `preload()` did: the library loaded (or None) and why."""

    path: str | None
    reason: str


_status: BlasStatus | None = None
_library: ctypes.CDLL | None = None


def _candidates() -> list[str]:
    found: list[str] = []
    for prefix in {sys.prefix, sys.base_prefix}:
        found += sorted(glob.glob(os.path.join(prefix, "lib", "libmkl_rt.so*")))
    name = ctypes.util.find_library("openblas")
    if name:
        found.append(name)
    found += [p for p in _SYSTEM_PATHS if Path(p).exists()]
    return found


def _open_cblas(path: str) -> bool:
    global _library
    try:
        lib = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    except OSError:
        return False
    if not hasattr(lib, "cblas_sgemm"):
        return False
    _library = lib
    return True


# (get, set) of the thread count, by library: MKL's and OpenBLAS's own names.
_THREAD_CALLS = (("MKL_Get_Max_Threads", "MKL_Set_Num_Threads"),
                 ("openblas_get_num_threads", "openblas_set_num_threads"))


def _thread_calls():
    """The preloaded BLAS's (get, set) thread-count functions, or None."""
    return next(((getattr(_library, get), getattr(_library, set_))
                 for get, set_ in _THREAD_CALLS if _library is not None and hasattr(_library, get)), None)


def thread_count() -> int | None:
    """The preloaded BLAS's thread count; None where no BLAS was preloaded or it cannot say."""
    calls = _thread_calls()
    return None if calls is None else calls[0]()


def set_thread_count(count: int | None) -> int | None:
    """Put the preloaded BLAS on `count` threads and return the count it had (a no-op returning None where
    no BLAS was preloaded, it has no such call, or `count` is None)."""
    calls = _thread_calls()
    if calls is None or count is None:
        return None
    get, set_ = calls
    previous = get()
    set_(count)
    return previous


THREAD_VARS = ("MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")


def ranks_on_this_host() -> int:
    """How many ranks of the ring run `mlx.launch` started (MLX_RANK, MLX_HOSTFILE) share this rank's address;
    1 outside such a run or when the hostfile cannot be read."""
    try:
        hosts = json.loads(Path(os.environ["MLX_HOSTFILE"]).read_text())
        mine = hosts[int(os.environ["MLX_RANK"])][0].rsplit(":", 1)[0]
        return sum(1 for host in hosts if host and host[0].rsplit(":", 1)[0] == mine)
    except (KeyError, OSError, ValueError, IndexError, TypeError, AttributeError):
        return 1


def share_cores_among_ranks() -> None:
    """Give each rank on this host its share of the cores as BLAS threads, unless a thread count is set."""
    local = ranks_on_this_host()
    if local > 1 and not any(var in os.environ for var in THREAD_VARS):
        for var in THREAD_VARS:
            os.environ[var] = str(max(1, (os.cpu_count() or 1) // local))


def preload() -> BlasStatus:
    """Load the first usable CBLAS once per process; later calls return the first result."""
    global _status
    if _status is not None:
        return _status
    if not sys.platform.startswith("linux"):
        _status = BlasStatus(None, "not needed: MLX uses Accelerate/Metal on macOS")
        return _status
    if "mlx.core" in sys.modules:
        _status = BlasStatus(None, "mlx.core was imported before locomlx; float32 matmuls use the slow reference BLAS")
        warnings.warn(
            f"locomlx: {_status.reason}. Import locomlx before mlx to get the fast CPU path.",
            RuntimeWarning,
            stacklevel=3,
        )
        return _status
    share_cores_among_ranks()
    # MKL on GNU OpenMP runs its products on the very threads the CPU kernels use (locomlx/models/kernels/pool.h);
    # on Intel's OpenMP the two teams would spin on each other's cores between calls.
    os.environ.setdefault("MKL_THREADING_LAYER", "GNU")
    requested = os.environ.get(ENV_VAR, "").strip()
    if requested.lower() == "none":
        _status = BlasStatus(None, f"disabled by {ENV_VAR}=none")
        return _status
    if requested:
        if _open_cblas(requested):
            _status = BlasStatus(requested, f"from {ENV_VAR}")
        else:
            _status = BlasStatus(None, f"{ENV_VAR}={requested} could not be loaded or does not export cblas_sgemm")
            warnings.warn(f"locomlx: {_status.reason}; {INSTALL_HINT} or fix the path.", RuntimeWarning, stacklevel=3)
        return _status
    for path in _candidates():
        if _open_cblas(path):
            _status = BlasStatus(path, "found")
            return _status
    _status = BlasStatus(None, "no optimized CBLAS found")
    warnings.warn(
        f"locomlx: {_status.reason}; CPU inference and training will be ~50x slower. Fix: {INSTALL_HINT}.",
        RuntimeWarning,
        stacklevel=3,
    )
    return _status
