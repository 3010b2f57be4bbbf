"""Where the registry lives, and how it is read and changed safely.

Every change is a locked read-modify-write (`edit_registry`): an exclusive
`fcntl.flock` on the library folder itself, so two commands at once queue
instead of losing each other's entries, and no lock file is left in the
library; then the new text is written beside the old and renamed over it, so
a reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Iterator

from locomlx.atomic import write_text_atomic
from locomlx.data.records import Problem
from locomlx.errors import LocomlxError
from locomlx.registry.schema import Registry, format_registry, parse_registry

REGISTRY_FILE = "registry.yaml"
SHOWN_PROBLEMS = 10


def registry_path(library: Path) -> Path:
    return Path(library) / REGISTRY_FILE


def read_registry(library: Path) -> tuple[Registry, list[Problem]]:
    """The registry and its schema problems; a library without registry.yaml has an empty one."""
    path = registry_path(library)
    if not path.is_file():
        return Registry(), []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return Registry(), [Problem(str(path), None, f"cannot be read ({exc}); restore it from version control")]
    return parse_registry(text, str(path))


def _refuse(problems: list[Problem], doing: str) -> LocomlxError:
    shown = "\n".join(map(str, problems[:SHOWN_PROBLEMS]))
    more = f"\n... and {len(problems) - SHOWN_PROBLEMS} more" if len(problems) > SHOWN_PROBLEMS else ""
    return LocomlxError(f"{doing}; fix these (locomlx registry validate lists them all):\n{shown}{more}")


def load_registry(library: Path) -> Registry:
    """The library's registry, refusing one with schema errors (a missing file is an empty registry)."""
    registry, problems = read_registry(library)
    if problems:
        raise _refuse(problems, f"{registry_path(library)} is not a valid registry")
    return registry


@contextmanager
def library_lock(library: Path) -> Iterator[None]:
    """Hold the library's exclusive lock (blocking until other locomlx commands release it)."""
    library = Path(library)
    library.mkdir(parents=True, exist_ok=True)
    fd = os.open(library, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def check_registry(registry: Registry, where: str) -> list[Problem]:
    """Schema problems of a registry built in memory (named by field: it has no file lines yet)."""
    _, problems = parse_registry(format_registry(registry), where)
    return [replace(p, line=None) for p in problems]


def save_registry(library: Path, registry: Registry) -> None:
    """Write the registry (call with the library lock held); an edit that breaks the schema is refused."""
    where = str(registry_path(library))
    problems = check_registry(registry, where)
    if problems:
        raise _refuse(problems, f"The change would make {where} invalid, so nothing was written")
    write_text_atomic(registry_path(library), format_registry(registry))


@contextmanager
def edit_registry(library: Path) -> Iterator[Registry]:
    """Read the registry under the library lock, let the caller change it, then save it atomically.

    If the block raises, nothing is written.
    """
    with library_lock(library):
        registry = load_registry(library)
        yield registry
        save_registry(library, registry)
