"""Find adapters by name in the adapter library (a folder of adapter directories)."""

from __future__ import annotations

import os
from pathlib import Path

from locomlx.errors import LocomlxError


def library_dir(override: str | Path | None = None) -> Path:
    """The adapter library: --adapters-dir, else $LOCOMLX_ADAPTERS, else ./adapters."""
    return Path(override or os.environ.get("LOCOMLX_ADAPTERS") or "adapters")


def list_adapters(library: Path) -> list[str]:
    if not library.is_dir():
        return []
    return sorted(p.name for p in library.iterdir() if (p / "adapter_config.json").is_file())


def find_adapter(name_or_path: str, library: Path) -> Path:
    """A path to an adapter directory, given its library name or its own path."""
    direct = Path(name_or_path).expanduser()
    if (direct / "adapter_config.json").is_file():
        return direct
    in_library = library / name_or_path
    if (in_library / "adapter_config.json").is_file():
        return in_library
    known = list_adapters(library)
    listing = f"available in {library}: {', '.join(known)}" if known else f"the library {library} has none"
    raise LocomlxError(f"No adapter '{name_or_path}' ({listing}). "
                       "Give a library name or a path to an adapter directory.")
