"""Routers by name: `--router NAME`, or the environment variable LOCOMLX_ROUTER.

To add a router, write a module with a class that has `name` and `route(query) -> RouteDecision`
(see decision.py and docs/routers.md) and add one line to ROUTERS.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from locomlx.engine.engine import Engine
from locomlx.errors import LocomlxError
from locomlx.registry import Registry
from locomlx.router.arrow import ArrowRouter
from locomlx.router.decision import Router
from locomlx.router.embedding import load_embedding_router
from locomlx.router.keyword import KeywordRouter

DEFAULT = "embedding"

ROUTERS: dict[str, Callable[[Engine, Registry, Path], Router]] = {
    "keyword": lambda engine, registry, library: KeywordRouter(registry),
    "embedding": load_embedding_router,
    "arrow": ArrowRouter,
}


def router_name(name: str | None) -> str:
    """--router, else $LOCOMLX_ROUTER, else the embedding router."""
    name = name or os.environ.get("LOCOMLX_ROUTER") or DEFAULT
    if name not in ROUTERS:
        raise LocomlxError(f"Unknown router '{name}' (available: {', '.join(sorted(ROUTERS))}).")
    return name


def load_router(name: str | None, engine: Engine, registry: Registry, library: Path) -> Router:
    return ROUTERS[router_name(name)](engine, registry, library)

