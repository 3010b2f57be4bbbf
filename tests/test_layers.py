"""The package's layering: no import runs back up, low layers load no model code, `import locomlx` has one
side effect, and the facade serves the README's Python API."""

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _import_graph():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_no_import_runs_back_up_the_layers():
    graph = _import_graph()
    assert graph.violations() == []
    assert graph.edges(), "the graph found no imports at all"


def test_the_checker_sees_an_import_that_runs_back_up(tmp_path, monkeypatch):
    graph = _import_graph()
    package = tmp_path / "locomlx"
    (package / "data").mkdir(parents=True)
    (package / "data" / "checks.py").write_text("def f():\n    from locomlx.engine.engine import Engine\n")
    monkeypatch.setattr(graph, "ROOT", tmp_path)
    monkeypatch.setattr(graph, "PACKAGE", package)
    (problem,) = graph.violations()
    assert problem.startswith("locomlx/data/checks.py:2: data (layer 1) imports engine") and "runs back up" in problem


def test_the_architecture_page_is_current():
    assert (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8") == _import_graph().markdown(), \
        "docs/architecture.md is stale: run python scripts/import_graph.py"


def test_reading_the_registry_and_checking_data_load_no_model_code():
    loaded = _run("import sys, locomlx.registry.store, locomlx.data.checks, locomlx.scoring.metrics; "
                  "print(sorted(m for m in sys.modules if m == 'mlx_lm' or m.startswith('locomlx.engine')))")
    assert loaded == "[]"


def test_importing_locomlx_leaves_the_allocator_alone_and_the_cli_sets_it():
    assert _run("import locomlx, locomlx.heap as heap; print(heap._applied)") == "None"
    applied = _run("import locomlx.heap as heap; from click.testing import CliRunner; from locomlx.cli import main; "
                   "r = CliRunner().invoke(main, ['adapters', 'list', '--adapters-dir', 'adapters']); "
                   "print(r.exit_code, heap._applied)")
    assert applied == f"0 {sys.platform.startswith('linux')}"


def test_the_facade_imports_on_first_use():
    assert _run("import sys, locomlx; print('locomlx.engine.engine' in sys.modules)") == "False"
    assert _run("from locomlx import Engine, Session, register_metric; print(Engine.__name__, Session.__name__)") \
        == "Engine Session"
