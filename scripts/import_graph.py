#!/usr/bin/env python3
"""The package's layers and its import graph: which part imports which, and any import that runs back up.

The layout reads as the pipeline, lowest first. A module may import from its own
layer or any layer below; an import from a higher layer is a violation. The test
suite runs `violations()` (tests/test_layers.py); this script writes the graph to
docs/architecture.md:

    python scripts/import_graph.py            # writes docs/architecture.md, exit 1 on a violation
    python scripts/import_graph.py --check    # only checks
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "locomlx"

# Lowest first. A part is a subpackage or a top-level module of locomlx.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundations", ("errors", "atomic", "provenance", "prompt", "blas", "heap", "distributed", "_version")),
    ("data and adapter files", ("data", "adapters")),
    ("scoring", ("scoring",)),
    ("base models", ("models",)),
    ("engine", ("engine",)),
    ("registry and training", ("registry", "train")),
    ("export", ("export",)),
    ("routing", ("router",)),
    ("inference enhancements", ("boost",)),
    ("evaluation and benchmarks", ("eval", "bench")),
    ("session", ("session",)),
    ("server", ("serve",)),
    ("command line", ("cli",)),
    ("public facade", ("__init__",)),
]
RANK = {part: rank for rank, (_, parts) in enumerate(LAYERS) for part in parts}


def part_of(module: str) -> str:
    """'locomlx.eval.run' -> 'eval'; 'locomlx' -> '__init__'."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else "__init__"


def module_name(path: Path) -> str:
    relative = path.relative_to(ROOT).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every locomlx import in a file, wherever it is (top level or inside a function)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith("locomlx")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("locomlx"):
            if node.module == "locomlx":  # from locomlx import x: x is a part (a subpackage) or a facade name
                found += [(node.lineno, f"locomlx.{alias.name}" if f"{alias.name}" in RANK else "locomlx")
                          for alias in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def edges() -> list[tuple[str, int, str, str]]:
    """(file, line, importing part, imported part) for every import between two different parts."""
    result = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = part_of(module_name(path))
        if path.parent == PACKAGE and path.name != "__init__.py":
            source = path.stem
        for line, target in imports_of(path):
            imported = part_of(target)
            if imported != source:
                result.append((str(path.relative_to(ROOT)), line, source, imported))
    return result


def violations() -> list[str]:
    """Every import of a higher layer, and every part missing from LAYERS."""
    problems = []
    for file, line, source, imported in edges():
        for part in (source, imported):
            if part not in RANK:
                problems.append(f"{file}:{line}: '{part}' is in no layer; add it to LAYERS in scripts/import_graph.py")
        if source in RANK and imported in RANK and RANK[imported] > RANK[source]:
            problems.append(f"{file}:{line}: {source} (layer {RANK[source]}) imports {imported} "
                            f"(layer {RANK[imported]}), which runs back up the layers")
    return problems


def markdown() -> str:
    counts: dict[tuple[str, str], int] = {}
    for _, _, source, imported in edges():
        counts[source, imported] = counts.get((source, imported), 0) + 1
    lines = ["# Architecture: layers and imports", "",
             "Written by `python scripts/import_graph.py` from the package's imports; `tests/test_layers.py` "
             "fails on any import that runs back up. Lowest layer first: a part imports only from its own layer "
             "and the layers below.", "",
             "| layer | parts | imports from |", "| --- | --- | --- |"]
    for rank, (title, parts) in enumerate(LAYERS):
        targets = sorted({t for (s, t) in counts if s in parts}, key=lambda t: (RANK.get(t, -1), t))
        lines.append(f"| {rank}. {title} | {', '.join(f'`{p}`' for p in parts)} | "
                     f"{', '.join(f'`{t}`' for t in targets) or '—'} |")
    lines += ["", "```mermaid", "graph BT"]
    lines += [f"  {s.strip('_')}_ --> {t.strip('_')}_" for (s, t) in sorted(counts)]
    lines += ["```", ""]
    problems = violations()
    lines.append(f"Imports running back up: {len(problems)}." if problems else "Imports running back up: none.")
    lines += [f"- {p}" for p in problems]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check; write nothing")
    args = parser.parse_args()
    problems = violations()
    for problem in problems:
        print(problem, file=sys.stderr)
    if not args.check:
        out = ROOT / "docs" / "architecture.md"
        out.write_text(markdown(), encoding="utf-8")
        print(f"wrote {out.relative_to(ROOT)}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
