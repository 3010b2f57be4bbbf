"""Unpack adapter archives (.tar.gz, .tgz, .zip) and check adapter files, trusting none of them.

An archive member is refused when its name is absolute or climbs out with
'..', when it is a hard link, device or FIFO, when a symbolic link points
outside the archive, or when it is too big (each member, all together, and
the number of members; sizes are counted while copying, not taken from the
headers). Any adapter folder, however it arrived, is refused when it holds a
pickle-format file (code could run on load: only safetensors weights are
accepted) or a link leading out of it.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Callable, Iterator

from locomlx.errors import LocomlxError

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".zip")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".npy", ".npz", ".joblib")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ArchiveLimits:
    """Generous for LoRA adapters (megabytes), far below what would fill a laptop's disk."""

    max_total_bytes: int = 1 << 30  # a rank-64 adapter of a 4B base in float32 is about 0.5 GB
    max_member_bytes: int = 1 << 30
    max_members: int = 10_000


@dataclass
class _Member:
    name: str
    kind: str  # file | dir | symlink | other
    link_target: str | None
    open: Callable[[], IO[bytes]]


def archive_stem(path: Path) -> str | None:
    """The archive's name without its suffix (None when `path` is not a supported archive)."""
    lowered = path.name.lower()
    return next((path.name[: -len(s)] for s in ARCHIVE_SUFFIXES if lowered.endswith(s)), None)


def _tar_members(tar: tarfile.TarFile) -> Iterator[_Member]:
    for info in tar:
        kind = "file" if info.isreg() else "dir" if info.isdir() else "symlink" if info.issym() else "other"
        yield _Member(info.name, kind, info.linkname if info.issym() else None, lambda info=info: tar.extractfile(info))


def _zip_members(archive: zipfile.ZipFile) -> Iterator[_Member]:
    for info in archive.infolist():
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            yield _Member(info.filename, "symlink", archive.read(info).decode("utf-8", "replace"), lambda: None)
        else:
            # Many zip writers leave out the file-type bits; only an explicit other type is refused.
            kind = "dir" if info.is_dir() else "file" if stat.S_IFMT(mode) in (0, stat.S_IFREG) else "other"
            yield _Member(info.filename, kind, None, lambda info=info: archive.open(info))


def _relative_name(name: str, archive: Path) -> PurePosixPath | None:
    """The member's path inside the archive, or an error for one that could land outside it."""
    if name.startswith("/") or "\\" in name or re.match(r"^[A-Za-z]:", name) or ".." in PurePosixPath(name).parts:
        raise LocomlxError(f"{archive}: member '{name}' has an absolute or '..' path that would land outside the "
                           "target folder; the archive is refused")
    parts = [part for part in PurePosixPath(name).parts if part != "."]
    return PurePosixPath(*parts) if parts else None


def _copy_limited(source: IO[bytes], target: Path, budget: int, what: str) -> int:
    """Copy at most `budget` bytes; returns how many were copied."""
    copied = 0
    with source, open(target, "wb") as out:
        while block := source.read(_CHUNK):
            copied += len(block)
            if copied > budget:
                raise LocomlxError(what)
            out.write(block)
    return copied


def extract_archive(archive: Path, dest: Path, limits: ArchiveLimits = ArchiveLimits()) -> None:
    """Unpack `archive` into the (empty) folder `dest`, refusing anything unsafe (see the module docstring)."""
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as opened:
                _extract(_zip_members(opened), archive, dest, limits)
        else:
            with tarfile.open(archive, "r:*") as opened:
                _extract(_tar_members(opened), archive, dest, limits)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise LocomlxError(f"{archive} cannot be unpacked ({exc}); it is damaged or not a .tar.gz/.zip") from exc


def _extract(members: Iterator[_Member], archive: Path, dest: Path, limits: ArchiveLimits) -> None:
    total, count, links = 0, 0, []
    for member in members:
        count += 1
        if count > limits.max_members:
            raise LocomlxError(f"{archive} has more than {limits.max_members} members; the archive is refused")
        relative = _relative_name(member.name, archive)
        if relative is None:
            continue
        target = dest / relative
        if member.kind == "dir":
            target.mkdir(parents=True, exist_ok=True)
        elif member.kind == "file":
            target.parent.mkdir(parents=True, exist_ok=True)
            budget = min(limits.max_member_bytes, limits.max_total_bytes - total)
            total += _copy_limited(member.open(), target, budget,
                                   f"{archive}: '{member.name}' makes the archive too large (limits: "
                                   f"{limits.max_member_bytes} bytes a member, {limits.max_total_bytes} in all); "
                                   "the archive is refused")
        elif member.kind == "symlink":
            links.append((relative, member.link_target))
        else:
            raise LocomlxError(f"{archive}: member '{member.name}' is a hard link, device or FIFO; only files, "
                               "folders and links inside the archive are accepted")
    for relative, link_target in links:
        landing = posixpath.normpath(posixpath.join(str(relative.parent), link_target))
        if posixpath.isabs(link_target) or landing == ".." or landing.startswith("../"):
            raise LocomlxError(f"{archive}: link '{relative}' points outside the archive ({link_target}); "
                               "the archive is refused")
        (dest / relative).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(link_target, dest / relative)


def check_adapter_files(root: Path, source: str) -> None:
    """Refuse a folder that holds pickle-format files, special files, or links leading out of it."""
    real_root = os.path.realpath(root)
    for folder, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(folder) / name
            shown = path.relative_to(root)
            if path.is_symlink():
                landing = os.path.realpath(path)
                if os.path.commonpath([real_root, landing]) != real_root:
                    raise LocomlxError(f"{source}: '{shown}' is a link to {os.readlink(path)}, outside the adapter; "
                                       "nothing was installed")
            elif name in filenames and not stat.S_ISREG(path.lstat().st_mode):
                raise LocomlxError(f"{source}: '{shown}' is not a regular file; nothing was installed")
            elif name.lower().endswith(PICKLE_SUFFIXES):
                raise LocomlxError(f"{source}: '{shown}' is a pickle-format file, which can run code when loaded; "
                                   "only safetensors weights are accepted (convert it), nothing was installed")
