"""`locomlx registry validate`: each problem it must find, with its file, line and field."""

import json
import shutil

from locomlx.cli import main
from locomlx.errors import LocomlxError
from locomlx.provenance import file_sha256
from locomlx.registry.install import AdapterInfo, install_adapter
from locomlx.registry.store import edit_registry, registry_path
from locomlx.registry.validate import validate_library

import pytest
from click.testing import CliRunner

from tests import tiny
from tests.test_registry_fixtures import add_adapter, fake_results, write_adapter

pytest_plugins = ["tests.test_registry_fixtures"]  # the `library` fixture


@pytest.fixture()
def two(library, tiny_model):
    """A valid library with two sentiment adapters."""
    add_adapter(library, tiny_model, "alpha", seed=1)
    add_adapter(library, tiny_model, "beta", seed=2, adapter_score=0.7)
    return library


def errors(library):
    return [p for p in validate_library(library) if p.severity == "error"]


def only_error(library):
    found = errors(library)
    assert len(found) == 1, "\n".join(map(str, found))
    return found[0]


def test_a_valid_library_has_no_problem(two):
    assert validate_library(two) == []


def test_a_missing_registry_is_an_error(tmp_path):
    (problem,) = validate_library(tmp_path)
    assert "does not exist" in problem.message and "registry init" in problem.message


def test_schema_errors_come_with_their_line(two):
    text = registry_path(two).read_text().replace("version: 1.0.0", "version: one", 1)
    registry_path(two).write_text(text)
    problem = only_error(two)
    assert problem.field == "adapters.alpha.version"
    assert problem.line == text.splitlines().index("    version: one") + 1


def test_a_missing_folder(two):
    shutil.rmtree(two / "beta")
    problem = only_error(two)
    assert problem.field == "adapters.beta.path" and "does not exist" in problem.message and problem.line


def test_changed_weights(two, tiny_model):
    tiny.make_adapter(two / "beta", tiny_model, rank=4, seed=9)
    problem = only_error(two)
    assert problem.field == "adapters.beta.sha256" and "registry refresh beta" in problem.message


def test_results_that_disagree_with_the_registry(two):
    results_file = two / "beta" / "eval" / "results.json"
    results = json.loads(results_file.read_text())
    results_file.write_text(json.dumps(dict(results, adapter_score=0.75, metric="rouge_l")))
    found = {p.field: p.message for p in errors(two)}
    assert set(found) == {"adapters.beta.scores.adapter_score", "adapters.beta.metric"}
    assert "is 0.7 but" in found["adapters.beta.scores.adapter_score"]
    assert "says 0.75" in found["adapters.beta.scores.adapter_score"]


def test_scores_without_results_and_results_without_scores(two):
    (two / "alpha" / "eval" / "results.json").unlink()
    with edit_registry(two) as registry:
        registry.adapters["beta"].scores = None
    found = {p.field: p.message for p in errors(two)}
    assert "does not exist to back these scores" in found["adapters.alpha.scores"]
    assert "is missing though" in found["adapters.beta.scores"]


def test_a_benchmark_changed_after_evaluation(two):
    benchmark = two / "alpha" / "eval" / "benchmark.jsonl"
    rows = [json.loads(line) for line in benchmark.read_text().splitlines()]
    tiny.write_jsonl(benchmark, rows[:-1] + [dict(rows[-1], input="The ending was a surprise.")])
    problem = only_error(two)
    assert problem.field == "adapters.alpha.benchmark" and "re-evaluate" in problem.message


@pytest.mark.parametrize("change, words", [
    ({"hidden_size": 96}, "maps 96 -> 96 but the base layer maps 64 -> 64"),
    ({"num_hidden_layers": 4}, "targets 'model.layers.2.self_attn.q_proj', which the base model"),
])
def test_shapes_that_do_not_fit_the_base(two, tiny_model, tmp_path, change, words):
    other = tmp_path / "other-model"
    other.mkdir()
    config = json.loads((tiny_model / "config.json").read_text())
    (other / "config.json").write_text(json.dumps(dict(config, **change)))
    tiny.make_adapter(two / "beta", other, rank=4)
    with edit_registry(two) as registry:  # registered knowingly, so only the shapes are wrong
        registry.adapters["beta"].sha256 = file_sha256(two / "beta" / "adapter_model.safetensors")
    problem = only_error(two)
    assert problem.field == "adapters.beta.path" and "does not fit the base model" in problem.message
    assert words in problem.message


def test_two_active_adapters_in_a_domain(two):
    text = registry_path(two).read_text()
    text = text.replace("active: false", "active: true")
    registry_path(two).write_text(text)
    problem = only_error(two)
    assert problem.field == "adapters.beta.active" and "'alpha' is already active" in problem.message
    assert problem.line == text.splitlines().index("    active: true", text.splitlines().index("  beta:")) + 1


def test_too_small_benchmark_and_training_set(library, tiny_model):
    folder = write_adapter(library / "small", tiny_model, seed=3, n_train=80, n_bench=60)
    with pytest.raises(LocomlxError, match="no eval/benchmark.jsonl"):  # install asks what validate will ask
        bare = write_adapter(library.parent / "bare", tiny_model, seed=3, n_train=80, n_bench=60)
        (bare / "eval" / "benchmark.jsonl").unlink()
        install_adapter(str(bare), library, AdapterInfo("sentiment"))
    benchmark = folder / "eval" / "benchmark.jsonl"
    full = benchmark.read_text()
    benchmark.write_text("".join(full.splitlines(keepends=True)[:20]))
    with pytest.raises(LocomlxError, match="20 usable benchmark examples.*at least 50"):
        install_adapter(str(folder), library, AdapterInfo("sentiment"))
    benchmark.write_text(full)
    install_adapter(str(folder), library, AdapterInfo("sentiment"))
    benchmark.write_text("".join(full.splitlines(keepends=True)[:20]))  # edited after it was installed
    found = [str(p) for p in errors(library)]
    assert any("benchmark.jsonl: error: 20 usable benchmark examples" in f and "at least 50" in f for f in found)
    assert any("dataset.jsonl: error: 80 usable train examples" in f and "at least 500" in f for f in found)


def test_training_data_that_overlaps_a_benchmark(two):
    leaked = json.loads((two / "alpha" / "eval" / "benchmark.jsonl").read_text().splitlines()[3])
    dataset = two / "beta" / "training" / "dataset.jsonl"
    dataset.write_text(dataset.read_text() + json.dumps(leaked) + "\n")
    problem = only_error(two)
    assert problem.path == str(dataset) and problem.line == 501 and "same text as benchmark" in problem.message


def test_a_base_model_with_other_weights(two):
    with edit_registry(two) as registry:
        registry.base_model.file_sha256 = "0" * 64
    problem = only_error(two)
    assert problem.field == "base_model.file_sha256" and "other weights" in problem.message


def test_warnings_for_unregistered_folders_and_missing_training_data(two, tiny_model):
    tiny.make_adapter(two / "stray", tiny_model, rank=4)
    (two / "alpha" / "training" / "dataset.jsonl").unlink()
    warnings = {p.field: p.message for p in validate_library(two) if p.severity == "warning"}
    assert "stray" in warnings["adapters"] and "not registered" in warnings["adapters"]
    assert "cannot be checked" in warnings["adapters.alpha.path"]
    assert errors(two) == []


def test_cli_exit_codes_and_json(two):
    runner = CliRunner()
    ok = runner.invoke(main, ["registry", "validate", "--adapters-dir", str(two)])
    assert ok.exit_code == 0 and "OK · 2 adapters · 0 errors" in ok.output
    shutil.rmtree(two / "beta")
    bad = runner.invoke(main, ["registry", "validate", "--adapters-dir", str(two)])
    assert bad.exit_code == 1
    assert f"{registry_path(two)}:" in bad.output and "field 'adapters.beta.path'" in bad.output
    assert "FAIL" in bad.output
    as_json = runner.invoke(main, ["registry", "validate", "--adapters-dir", str(two), "--json"])
    report = json.loads(as_json.output)
    assert as_json.exit_code == 1 and report["errors"] == 1 and report["problems"][0]["field"] == "adapters.beta.path"


def test_refresh_records_deliberate_changes(two, tiny_model):
    tiny.make_adapter(two / "beta", tiny_model, rank=4, seed=9)
    results_file = two / "beta" / "eval" / "results.json"
    results_file.write_text(json.dumps(fake_results("beta", two / "beta" / "eval" / "benchmark.jsonl", 0.9)))
    result = CliRunner().invoke(main, ["registry", "refresh", "beta", "--adapters-dir", str(two)])
    assert result.exit_code == 0 and "beta: sha256" in result.output and "beta: scores copied" in result.output
    assert validate_library(two) == []
    again = CliRunner().invoke(main, ["registry", "refresh", "--adapters-dir", str(two)])
    assert "Nothing to change" in again.output


def test_a_base_model_that_cannot_be_resolved(two, tmp_path):
    with edit_registry(two) as registry:
        registry.base_model.id = str(tmp_path / "gone.gguf")
    problem = only_error(two)
    assert problem.field == "base_model.id"
    assert "cannot be resolved" in problem.message and "does not exist" in problem.message
