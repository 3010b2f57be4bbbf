"""Staging folders of installs (`.install-*` in the library): claimed while an install runs, found stale after.

An install unpacks into a staging folder and holds a lock on its `.owner` file for as long as it runs,
so a folder whose lock is free belongs to an install that died (kill -9, power loss) and can go;
other installs running at the same time keep theirs. `.previous-*` folders hold the version an
upgrade replaces while it is swapped in; one left behind may be the only copy of that version, so
it is reported, never deleted.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from pathlib import Path

INSTALL_PREFIX = ".install-"
PREVIOUS_PREFIX = ".previous-"
OWNER = ".owner"


def claim_staging(library: Path) -> tuple[Path, int]:
    """A new staging folder and the descriptor holding its lock (close it, after removing the folder)."""
    staging = Path(tempfile.mkdtemp(prefix=INSTALL_PREFIX, dir=library))
    fd = os.open(staging / OWNER, os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return staging, fd


def _abandoned(folder: Path) -> bool:
    try:
        fd = os.open(folder / OWNER, os.O_RDWR)
    except FileNotFoundError:
        return True  # died between making the folder and locking it
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def stale_staging(library: Path) -> tuple[list[Path], list[Path]]:
    """(abandoned .install-* folders, left-behind .previous-* folders) of `library`."""
    if not library.is_dir():
        return [], []
    installs = sorted(p for p in library.glob(INSTALL_PREFIX + "*") if p.is_dir() and _abandoned(p))
    previous = sorted(p for p in library.glob(PREVIOUS_PREFIX + "*") if p.is_dir())
    return installs, previous


def remove_abandoned(library: Path) -> list[Path]:
    """Delete the abandoned install folders; returns them."""
    installs, _ = stale_staging(library)
    for folder in installs:
        shutil.rmtree(folder, ignore_errors=True)
    return installs


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
