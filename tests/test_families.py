"""Every dense mlx-lm family through locomlx's fast paths, each checked against the model's own forward pass.

Tiny random models (tests/families.py) of nine model types: compiled and plain decode (prompts shorter and
longer than Gemma 3's sliding window), batched and shared-prefix generation, adapters against mlx-lm's own
LoRA layers, the answer-window training loss, a real training run, and the router's hidden states.
"""

import json

from locomlx.engine.decode import decode
from locomlx.engine.engine import Engine
from locomlx.models import anatomy
from locomlx.models.layers import linear_dims
from locomlx.router.embedding import embed_queries
from locomlx.train.loop import answer_loss, answer_windows, collate

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from tests import tiny
from tests.families import FAMILIES, build_family

SYSTEM = {"role": "system", "content": "You are a helpful model for the student swarm on a laptop."}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory):
    path = build_family(tmp_path_factory.mktemp(request.param), request.param)
    return request.param, path, Engine.load(str(path), "float32")


def _own_greedy(model, prompt: list[int], n: int) -> list[int]:
    """Greedy tokens from the model's own full forward pass at every step (no cache at all)."""
    tokens = list(prompt)
    for _ in range(n):
        tokens.append(int(model(mx.array([tokens]))[0, -1].argmax().item()))
    return tokens[len(prompt):]


@pytest.mark.parametrize("length", [3, 20])  # shorter and longer than the 8-token sliding window
def test_decode_matches_own_forward(family, length):
    name, _, engine = family
    prompt = [5 + (7 * i) % 300 for i in range(length)]
    ours = list(decode(engine.model, prompt, max_tokens=14, sampler=lambda logits: logits.argmax(-1),
                       stop_tokens=[], decoder=engine.decoder))
    assert ours == _own_greedy(engine.model, prompt, 14), name
    if name in ("llama", "qwen2", "phi3"):  # plain KV caches: the compiled steps ran
        assert engine.decoder is not None and engine.decoder._steps


def test_batch_matches_single(family):
    name, _, engine = family
    conversations = [[SYSTEM, {"role": "user", "content": text}]
                     for text in ("the cat sat", "what is the capital of france", "review great film loved")]
    batch = engine.generate_batch(conversations, max_tokens=10)
    assert batch.texts == [engine.generate(c, max_tokens=10).text for c in conversations], name


def test_repeated_prompts_match_single(family):
    """Rows repeating a prompt (votes) start from one prefill of it, merged with caches of other lengths;
    rotating sliding-window caches (gemma3) included, each row answers as its prompt alone."""
    name, _, engine = family
    conversations = [[SYSTEM, {"role": "user", "content": text}]
                     for text in ("the cat sat", "what is the capital of france", "review great film loved")]
    rows = [conversations[0]] * 2 + [conversations[1]] * 3 + [conversations[2]]
    batch = engine.generate_batch(rows, max_tokens=10)
    assert batch.texts == [engine.generate(c, max_tokens=10).text for c in rows], name


def _adapter_for(model, out_dir, rank=4):
    """A random LoRA adapter on every linear layer of every block, in mlx-lm's layout."""
    keys = anatomy.block_linears(model)
    rng = np.random.default_rng(3)
    tensors = {}
    for path, module in model.named_modules():
        leaf = path.split(".layers.", 1)[1].split(".", 1)[-1] if ".layers." in path else None
        if isinstance(module, nn.Linear) and leaf in keys:
            d_in, d_out = linear_dims(module)
            tensors[f"{path}.lora_a"] = mx.array(rng.normal(0, 0.2, (d_in, rank)).astype(np.float32))
            tensors[f"{path}.lora_b"] = mx.array(rng.normal(0, 0.2, (rank, d_out)).astype(np.float32))
    out_dir.mkdir()
    mx.save_safetensors(str(out_dir / "adapters.safetensors"), tensors)
    (out_dir / "adapter_config.json").write_text(json.dumps({
        "fine_tune_type": "lora", "num_layers": len(model.layers),
        "lora_parameters": {"rank": rank, "scale": 2.0, "dropout": 0.0, "keys": keys}}))
    return out_dir


def test_adapter_matches_mlx_lm_lora(family, tmp_path):
    from mlx_lm.tuner.utils import load_adapters
    from mlx_lm.utils import load_model

    name, path, engine = family
    adapter = _adapter_for(engine.model, tmp_path / "adapter")
    engine.load_adapter(adapter, "a")
    try:
        engine.select("a")
        tokens = mx.array([[5 + (11 * i) % 300 for i in range(12)]])
        ours = np.array(engine.model(tokens)[0])
        reference, _ = load_model(path)
        load_adapters(reference, str(adapter))
        np.testing.assert_allclose(ours, np.array(reference(tokens)[0]), rtol=1e-4, atol=1e-4, err_msg=name)
        engine.select(None)
        assert np.abs(ours - np.array(engine.model(tokens)[0])).max() > 1e-2  # the adapter changed the logits
    finally:
        engine.select(None)
        engine.unload_adapter("a")


def test_arrow_router_finds_the_input_projections_of_every_block(family, tmp_path):
    from locomlx.router.arrow import adapter_prototypes

    from mlx_lm.utils import load_model

    name, path, _ = family
    model, _ = load_model(path)  # unwrapped linear layers (the engine's carry its adapter slots)
    folders = {"a": _adapter_for(model, tmp_path / "a"), "b": _adapter_for(model, tmp_path / "b")}
    prototypes = adapter_prototypes(folders, len(model.layers))
    assert sorted(prototypes) == list(range(len(model.layers))), name
    projections = 1 if name == "phi3" else 3  # phi3's fused qkv_proj, else q, k and v
    assert prototypes[0].shape == (2, projections, model.layers[0].self_attn.o_proj.weight.shape[0]), name


def test_training_loss_equals_models_own(family):
    name, _, engine = family
    model = engine.model
    items = [(list(range(5, 40)), 30), (list(range(50, 61)), 4), (list(range(70, 90)), 19)]
    batch, lengths = collate(items)
    logits = model(batch[:, :-1])
    logprobs = np.array(logits - mx.logsumexp(logits, axis=-1, keepdims=True))
    tokens = np.array(batch)
    expected = np.mean([-logprobs[row, j, tokens[row, j + 1]] for row, (seq, offset) in enumerate(items)
                        for j in range(offset - 1, len(seq) - 1)])
    split = anatomy.forward_split(model)
    # The head shortcut is taken exactly where the model's head is a plain projection.
    assert (split is None) == (name == "granite"), name
    for chosen in (split, None):
        loss, _ = answer_loss(model, batch, *answer_windows(lengths), chosen)
        np.testing.assert_allclose(loss.item(), expected, rtol=1e-5, err_msg=name)


def _reference_hidden(model, tokens, k):
    """The inner model's own forward with only its first k blocks and no final norm."""
    inner = anatomy.inner_model(model)
    layers, norm = inner.layers, inner.norm
    inner.layers, inner.norm = layers[:k], nn.Identity()
    try:
        return inner(tokens)
    finally:
        inner.layers, inner.norm = layers, norm


def test_router_features_are_the_models_hidden_states(family):
    name, _, engine = family
    texts = ["the cat sat on the mat", "free money win"]
    ours = embed_queries(engine, texts, layers=2)
    for row, text in enumerate(texts):
        hidden = _reference_hidden(engine.model, mx.array([engine.tokenizer.encode(text)]), 2)
        np.testing.assert_allclose(ours[row], np.array(hidden[0].mean(axis=0)), rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("kind", ["phi3", "gemma3", "granite"])  # fused projections, the wrapper, a scaled head
def test_training_runs_on_the_default_targets(kind, tmp_path):
    from locomlx.cli import main

    import yaml
    from click.testing import CliRunner

    model_dir = build_family(tmp_path / kind, kind)
    data = tiny.write_jsonl(tmp_path / "train.jsonl", tiny.sentiment_examples(24, seed=0))
    result = CliRunner().invoke(main, ["train", "--dataset", str(data), "--base-model", str(model_dir),
                                       "--output", str(tmp_path / "out"), "--epochs", "0.4", "--lora-rank", "2",
                                       "--allow-small", "--json"])
    assert result.exit_code == 0, result.output
    recorded = yaml.safe_load((tmp_path / "out" / "training" / "train_config.yaml").read_text())
    linears = anatomy.block_linears(Engine.load(str(model_dir), "float32").model)
    assert recorded["config"]["target_modules"] == linears
    assert json.loads((tmp_path / "out" / "adapter_config.json").read_text())["lora_parameters"]["keys"] == linears


def test_peft_names_of_a_wrapped_language_model():
    from locomlx.adapters.format import mlx_module, peft_module

    mlx = "language_model.model.layers.3.self_attn.q_proj"
    assert peft_module(mlx) == "base_model.model.model.language_model.layers.3.self_attn.q_proj"
    assert mlx_module(peft_module(mlx)) == mlx
    plain = "model.layers.0.mlp.gate_up_proj"
    assert peft_module(plain) == f"base_model.model.{plain}" and mlx_module(peft_module(plain)) == plain
