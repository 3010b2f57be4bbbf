"""CONTRIBUTING.md's five steps, with its exact commands (read from the guide, run through the `loco` alias and
the scripts), on the tiny model: a student adds the domain `your-domain` to a library of four."""

import importlib.util
import json
import os
import sys
from pathlib import Path

from locomlx.registry import load_registry
from locomlx.registry.checklist import missing_ood_benchmarks, same_domain_benchmarks
from locomlx.registry.validate import validate_library

import pytest

from tests.test_registry_fixtures import add_adapter, new_library

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_NAMES = [("sentiment-rt", "sentiment"), ("spam-assassin", "spam"), ("math-chainsum", "math"),
                 ("summary-xsum", "summary")]


def _walk_guide():
    spec = importlib.util.spec_from_file_location("walk_guide", ROOT / "scripts" / "walk_guide.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def walked(tiny_model, tmp_path_factory):
    """The guide, walked once: (workdir, steps)."""
    root = tmp_path_factory.mktemp("before")
    library = new_library(root, tiny_model)
    for seed, (name, domain) in enumerate(SHIPPED_NAMES, start=21):
        add_adapter(library, tiny_model, name, domain=domain, seed=seed, keywords=[domain])
    workdir = tmp_path_factory.mktemp("clone")
    env = dict(os.environ, LOCOMLX_BASE_MODEL=str(tiny_model))
    return workdir, _walk_guide().walk(workdir, library, env)


def test_the_guide_s_commands_all_run_as_written(walked):
    workdir, steps = walked
    guide = _walk_guide().guide_commands()
    assert [s.command for s in steps] == guide and len(guide) >= 15
    assert all(s.command.startswith(("loco ", "python ", "mkdir ", "cp ")) for s in steps)
    assert {s.command.split()[0] for s in steps} >= {"loco", "python"}


def test_step_1_the_proposal_holds_the_base_model_s_answers(walked):
    workdir, _ = walked
    proposal = (workdir / "adapters" / "your-domain" / "PROPOSAL.md").read_text()
    answers = proposal.split("## What the base model answers now")[1]
    assert answers.count("**Q:**") == 3 and "Rewrite in the past tense: I walk to the park." in answers


def test_steps_2_and_3_train_in_place_and_keep_the_student_s_log(walked):
    workdir, steps = walked
    folder = workdir / "adapters" / "your-domain"
    assert (folder / "adapter_config.json").is_file() and (folder / "training" / "generate.py").is_file()
    log = (folder / "training" / "TRAINING_LOG.md").read_text()
    assert "60 of 580 rows (10%)" in log and "## Training run" in log and "(fill in" not in log
    train = next(s for s in steps if s.command.startswith("python scripts/fine_tune.py"))
    assert "step" in train.output and "Adapter written to" in train.output


def test_step_4_each_evaluate_command_leaves_its_own_file(walked):
    workdir, steps = walked
    eval_dir = workdir / "adapters" / "your-domain" / "eval"
    own = str(Path("adapters/your-domain/eval/benchmark.jsonl"))
    results = json.loads((eval_dir / "results.json").read_text())
    assert results["adapter"] == "your-domain" and results["benchmark"] == own
    assert results["metric"] == "exact_match_cased" and len(results["ood"]) == 4
    assert own not in [e["benchmark"] for e in results["ood"]]  # its own benchmark is never out of domain
    base = json.loads((eval_dir / "base_results.json").read_text())
    assert base["adapter"] is None and base["benchmark"] == own and base["model"] == "base"
    assert {"base_model", "quantization", "timestamp", "base_model_score"} <= set(base)
    ood = json.loads((eval_dir / "ood_results.json").read_text())
    assert ood["kind"] == "out-of-domain" and ood["benchmark"].endswith("sentiment-rt/eval/benchmark.jsonl")
    assert sorted(p.name for p in eval_dir.iterdir()) == ["base_results.json", "benchmark.jsonl", "ood_results.json",
                                                         "results.json"]
    first = next(s for s in steps if s.command.startswith("python scripts/evaluate.py --adapter"))
    assert "your-domain on benchmark.jsonl" in first.output and ("PASS" in first.output or "FAIL" in first.output)


def test_step_5_registers_syncs_and_passes_the_checklist(walked):
    workdir, steps = walked
    library = workdir / "adapters"
    check = next(s for s in steps if s.command.startswith("loco check"))
    assert "your-domain: ready for a pull request" in check.output and "✘" not in check.output
    registry = load_registry(library)
    assert registry.adapters["your-domain"].domain == "your-domain"
    for name, entry in registry.adapters.items():  # the library's own test: every adapter scored on every domain
        results = json.loads((library / entry.path / "eval" / "results.json").read_text())
        assert missing_ood_benchmarks(library / entry.path, library, results,
                                      same_domain_benchmarks(registry, library, name)) == [], name
    assert [p for p in validate_library(library) if p.severity == "error"] == []


@pytest.mark.parametrize("script, usage", [("fine_tune.py", "--dataset"), ("evaluate.py", "--adapter")])
def test_the_guide_s_scripts_teach_their_own_usage(script, usage):
    import subprocess

    done = subprocess.run([sys.executable, str(ROOT / "scripts" / script), "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith(f"Usage: {script} [OPTIONS]"), done.stdout[:200]
    assert usage in done.stdout and "Examples:" in done.stdout
