"""locomlx: one small 4-bit base model, many resident LoRA specialists, a router in front.

    from locomlx import Engine, Session, library_dir
    session = Session(Engine.load(), library_dir())
    print(session.ask("Is this review positive or negative? A gorgeous, moving film.").footer())

Importing locomlx loads an optimized CBLAS into the process (Linux), which must happen before
anything imports `mlx.core` (see blas.py); that is its only side effect. The allocator setting
that speeds up MLX's CPU buffers (heap.py) changes the whole process, so only the command line,
which owns its process, applies it; an embedding program opts in with `locomlx.keep_freed_memory()`.
The names below are imported on first use, so reading a registry never loads the model code.
"""

from importlib import import_module

from locomlx import blas as _blas
from locomlx._version import __version__

_blas.preload()

_EXPORTS = {
    "Engine": "locomlx.engine.engine",
    "Generation": "locomlx.engine.engine",
    "Session": "locomlx.session",
    "GenerationSettings": "locomlx.session",
    "Answer": "locomlx.session",
    "library_dir": "locomlx.adapters.library",
    "load_registry": "locomlx.registry",
    "active_adapters": "locomlx.registry",
    "load_router": "locomlx.router.load",
    "load_config": "locomlx.train.config",
    "InferenceConfig": "locomlx.eval.run",
    "run_benchmark": "locomlx.eval.run",
    "evaluate_adapter": "locomlx.eval.evaluate",
    "evaluate_base": "locomlx.eval.evaluate",
    "register_metric": "locomlx.scoring.metrics",
    "keep_freed_memory": "locomlx.heap",
    "LocomlxError": "locomlx.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'locomlx' has no attribute '{name}'")
