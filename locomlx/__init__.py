"""locomlx: one small 4-bit base model, many resident LoRA specialists, a router in front."""

# Must run before anything imports mlx.core (see locomlx/blas.py).
from locomlx import blas as _blas
from locomlx import heap as _heap

_blas.preload()
_heap.keep_freed_memory()

__version__ = "0.1.0"
