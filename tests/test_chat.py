"""`locomlx chat` through click's CliRunner on the tiny model: one-shot, JSON, and the REPL."""

import json

from locomlx.cli import main

import pytest
from click.testing import CliRunner

from tests import tiny


@pytest.fixture(scope="module")
def library(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("library")
    tiny.make_adapter(root / "alpha", tiny_model, rank=4, seed=11)
    tiny.make_adapter(root / "beta", tiny_model, rank=16, seed=12, keys=("mlp.down_proj",))
    return root


def _chat(args, tiny_model, library, input=None):
    runner = CliRunner()
    return runner.invoke(main, ["chat", "--base-model", str(tiny_model), "--adapters-dir", str(library),
                                "--max-tokens", "8", *args], input=input)


def test_one_shot_prints_answer_and_footer(tiny_model, library):
    result = _chat(["--adapter", "alpha", "the cat sat"], tiny_model, library)
    assert result.exit_code == 0, result.output
    footer = result.output.strip().splitlines()[-1]
    assert footer.startswith("[adapter: alpha") and "tokens" in footer and "tok/s" in footer


def test_json_output(tiny_model, library):
    result = _chat(["--adapter", "none", "--json", "hello"], tiny_model, library)
    assert result.exit_code == 0, result.output
    record = json.loads(result.output.strip().splitlines()[-1])
    assert record["adapter"] is None and record["requested_adapter"] == "none"
    assert record["generation_tokens"] <= 8 and isinstance(record["answer"], str)


def test_adapters_change_the_answer(tiny_model, library):
    answers = {}
    for adapter in ("none", "alpha", "beta"):
        result = _chat(["--adapter", adapter, "--json", "the dog sat on the"], tiny_model, library)
        answers[adapter] = json.loads(result.output.strip().splitlines()[-1])["answer"]
    assert len(set(answers.values())) == 3, answers


def test_repl_switches_without_reloading(tiny_model, library):
    script = "\n".join(["/adapter alpha", "the cat", "/adapter beta", "the cat", "/adapter alpha", "the cat",
                        "/adapters", "/stats", "/adapter none", "the cat", "/clear", "/help", "/quit"]) + "\n"
    result = _chat([], tiny_model, library, input=script)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "loaded adapter 'alpha'" in out and "loaded adapter 'beta'" in out
    assert "switched to resident adapter 'alpha'" in out and "(no reload)" in out
    assert out.count("base load:") == 1  # the base was loaded once for the whole session
    assert "adapter load:   alpha" in out and "adapter load:   beta" in out
    assert "* alpha" in out and "* beta" in out
    assert "[adapter: none (base model)" in out
    assert "conversation cleared" in out and "/adapter NAME" in out


def test_repl_reports_errors_and_goes_on(tiny_model, library):
    result = _chat([], tiny_model, library, input="/adapter nope\n/bogus\nhello\n")
    assert result.exit_code == 0
    assert "No adapter 'nope' (available in" in result.output
    assert "Unknown command '/bogus'" in result.output
    assert "[adapter:" in result.output


def test_bad_base_model_is_one_line_error(tmp_path):
    result = CliRunner().invoke(main, ["chat", "--base-model", str(tmp_path / "missing.gguf"), "hi"])
    assert result.exit_code == 1
    assert result.output.strip().startswith("error: GGUF file")
    assert "Traceback" not in result.output


def test_help_teaches_with_examples():
    result = CliRunner().invoke(main, ["chat", "--help"])
    assert "Examples:" in result.output and "locomlx chat \"What is the capital of France?\"" in result.output
