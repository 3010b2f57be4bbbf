"""The engine: resident adapters of different ranks, switching, unloading, generation options."""

from locomlx.engine.engine import Engine
from locomlx.errors import LocomlxError

import mlx.core as mx
import numpy as np
import pytest

from tests import tiny

TOKENS = [5, 17, 42, 99, 7, 3, 60]


def _logits(model, tokens=TOKENS):
    return np.array(model(mx.array([tokens]))[0].astype(mx.float32))


@pytest.fixture(scope="module")
def adapters(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    return {
        "r4": tiny.make_adapter(root / "r4", tiny_model, rank=4, scale=2.0, seed=1,
                                weights_file="adapters.safetensors"),
        "r16": tiny.make_adapter(root / "r16", tiny_model, rank=16, scale=0.5, seed=2, num_layers=1,
                                 keys=("self_attn.q_proj", "mlp.down_proj", "mlp.up_proj"),
                                 weights_file="adapters.safetensors"),
        "peft": tiny.make_adapter(root / "peft", tiny_model, rank=8, scale=1.5, seed=3, layout="peft",
                                  keys=("self_attn.k_proj", "self_attn.o_proj")),
    }


@pytest.fixture()
def engine(tiny_model):
    return Engine.load(str(tiny_model), compute_dtype="float32")


def _fresh_mlx_lm(model_dir, adapter_dir=None):
    from mlx_lm import load

    model, _ = load(str(model_dir), adapter_path=str(adapter_dir) if adapter_dir else None)
    return model


def test_resident_adapters_match_freshly_loaded_base_plus_adapter(engine, tiny_model, adapters):
    for name in ("r4", "r16"):
        engine.load_adapter(adapters[name])
    base_logits = _logits(_fresh_mlx_lm(tiny_model))
    # Switch back and forth: every selection must equal mlx-lm's own fresh load of base+adapter.
    for name in ("r4", "r16", None, "r16", "r4", None):
        engine.select(name)
        expected = _logits(_fresh_mlx_lm(tiny_model, adapters[name])) if name else base_logits
        np.testing.assert_allclose(_logits(engine.model), expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(_logits(_fresh_mlx_lm(tiny_model, adapters["r4"])), base_logits, atol=1e-3)


def test_peft_adapter_equals_the_same_update_in_mlx_layout(engine, tiny_model, adapters, tmp_path):
    mlx_twin = tiny.make_adapter(tmp_path / "twin", tiny_model, rank=8, scale=1.5, seed=3,
                                 keys=("self_attn.k_proj", "self_attn.o_proj"))
    engine.load_adapter(adapters["peft"])
    engine.load_adapter(mlx_twin)
    engine.select("peft")
    peft = _logits(engine.model)
    engine.select("twin")
    np.testing.assert_allclose(peft, _logits(engine.model), rtol=1e-5, atol=1e-5)


def test_switching_copies_nothing(engine, adapters):
    engine.load_adapter(adapters["r4"])
    from mlx.utils import tree_flatten

    before = {id(v) for _, v in tree_flatten(engine.model.parameters())}
    seconds = engine.select("r4")
    engine.select(None)
    after = {id(v) for _, v in tree_flatten(engine.model.parameters())}
    assert before == after
    assert seconds < 0.01  # a pointer write; generous bound, the benchmark measures the real figure


def test_adapters_stay_out_of_base_parameters(engine, adapters):
    from mlx.utils import tree_flatten

    n_before = len(tree_flatten(engine.model.parameters()))
    engine.load_adapter(adapters["r16"])
    names = [k for k, _ in tree_flatten(engine.model.parameters())]
    assert len(names) == n_before and not any("lora" in k for k in names)


def test_unload_restores_base_and_keeps_others(engine, adapters):
    base = _logits(engine.model)
    engine.load_adapter(adapters["r4"])
    engine.load_adapter(adapters["r16"])
    engine.select("r16")
    r16 = _logits(engine.model)
    engine.unload_adapter("r4")
    assert list(engine.adapters) == ["r16"]
    np.testing.assert_allclose(_logits(engine.model), r16, rtol=1e-6)
    engine.unload_adapter("r16")
    assert engine.selection.active is None
    np.testing.assert_allclose(_logits(engine.model), base, rtol=1e-6)
    with pytest.raises(LocomlxError, match="No adapter named 'r16' is loaded"):
        engine.unload_adapter("r16")


def test_adapter_on_4bit_base_in_quantized_compute(tiny_model_4bit, tmp_path):
    adapter = tiny.make_adapter(tmp_path / "a", tiny_model_4bit, rank=4, weights_file="adapters.safetensors")
    engine = Engine.load(str(tiny_model_4bit), compute_dtype="quantized")
    engine.load_adapter(adapter)
    engine.select("a")
    expected = _logits(_fresh_mlx_lm(tiny_model_4bit, adapter))
    np.testing.assert_allclose(_logits(engine.model), expected, rtol=1e-3, atol=1e-3)


def test_wrong_shapes_are_refused_and_engine_unchanged(engine, tmp_path):
    other = tiny.build_model(tmp_path / "wide", seed=1)
    import json

    config = json.loads((other / "config.json").read_text())
    config["intermediate_size"] = 96
    (other / "config.json").write_text(json.dumps(config))
    bad = tiny.make_adapter(tmp_path / "bad", other, rank=4, keys=("self_attn.q_proj", "mlp.down_proj"))
    before = _logits(engine.model)
    with pytest.raises(LocomlxError,
                       match=r"mlp.down_proj' has LoRA shapes \(96, 4\).*trained for a different base model"):
        engine.load_adapter(bad)
    assert engine.adapters == {}
    np.testing.assert_allclose(_logits(engine.model), before)


def test_adapter_for_missing_layer_is_refused(engine, tiny_model, tmp_path):
    bad = tiny.make_adapter(tmp_path / "deep", tiny_model, rank=4)
    weights = mx.load(str(bad / "adapter_model.safetensors"))
    weights = {k.replace("layers.1.", "layers.7."): v for k, v in weights.items()}
    mx.save_safetensors(str(bad / "adapter_model.safetensors"), weights)
    with pytest.raises(LocomlxError, match=r"targets 'model.layers.7.self_attn.[qv]_proj', which this base model"):
        engine.load_adapter(bad)


def test_duplicate_name_is_refused(engine, adapters):
    engine.load_adapter(adapters["r4"])
    with pytest.raises(LocomlxError, match="already loaded"):
        engine.load_adapter(adapters["r4"])


def test_bad_adapter_directories(engine, tmp_path):
    with pytest.raises(LocomlxError, match="does not exist"):
        engine.load_adapter(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LocomlxError, match="no adapter_config.json"):
        engine.load_adapter(tmp_path / "empty")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 8, "lora_alpha": 16}')
    (pickled / "adapter_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(LocomlxError, match="pickled weights are refused"):
        engine.load_adapter(pickled)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text("{not json")
    with pytest.raises(LocomlxError, match="adapter_config.json is not valid JSON"):
        engine.load_adapter(broken)


def test_greedy_generation_is_deterministic_and_streams(engine):
    messages = [{"role": "user", "content": "the cat sat on the"}]
    chunks = list(engine.stream_generate(messages, max_tokens=12))
    pieces, first = [c.text for c in chunks], chunks[-1].generation
    second = engine.generate(messages, max_tokens=12)
    assert first.text == second.text == "".join(pieces)
    assert first.generation_tokens <= 12 and first.prompt_tokens > 0
    assert first.peak_memory_mb > 0


def test_sampling_follows_the_seed(engine):
    messages = [{"role": "user", "content": "hello world"}]
    runs = [engine.generate(messages, max_tokens=16, temperature=1.0, seed=s).text for s in (1, 1, 2)]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_max_tokens_and_finish_reason(engine):
    result = engine.generate([{"role": "user", "content": "a dog"}], max_tokens=3)
    assert result.generation_tokens <= 3
    assert result.finish_reason in ("length", "stop")


def test_stops_on_eos(engine):
    """Make the first greedy token an end-of-sequence token: generation must stop right there."""
    messages = [{"role": "user", "content": "hello"}]
    first = engine.generate(messages, max_tokens=1)
    first_token = engine.tokenizer.encode(first.text, add_special_tokens=False)[0]
    engine.tokenizer.eos_token_ids = set(engine.tokenizer.eos_token_ids) | {first_token}
    result = engine.generate(messages, max_tokens=20)
    assert result.finish_reason == "stop"
    assert result.generation_tokens == 1


def test_long_prompt_is_truncated_with_a_warning(engine):
    long_text = " ".join(tiny.corpus(200))
    with pytest.warns(UserWarning, match="prompt was cut"):
        result = engine.generate([{"role": "user", "content": long_text}], max_tokens=8)
    assert result.truncated
    assert result.prompt_tokens <= engine.base.context_length - 8


def test_compute_dtypes_agree(tiny_model_4bit):
    tokens = TOKENS
    f32 = _logits(Engine.load(str(tiny_model_4bit), compute_dtype="float32").model, tokens)
    q = _logits(Engine.load(str(tiny_model_4bit), compute_dtype="quantized").model, tokens)
    bf16 = _logits(Engine.load(str(tiny_model_4bit), compute_dtype="bfloat16").model, tokens)
    np.testing.assert_allclose(q, f32, atol=2e-2)
    np.testing.assert_allclose(bf16, f32, atol=1e-1)


def test_unknown_compute_dtype(tiny_model):
    with pytest.raises(LocomlxError, match="Unknown compute dtype 'float8'"):
        Engine.load(str(tiny_model), compute_dtype="float8")


def test_shared_prompt_prefix_is_prefilled_once_with_the_same_results(engine, adapters):
    """Rows sharing a system turn and instruction get the prefix's keys and values from one forward pass;
    every row's answer and log-probability equal generating it alone."""
    from locomlx.engine.prefix import common_prefix_length, prefill_shared_prefix
    from locomlx.prompt import example_messages, render_prompt

    engine.load_adapter(adapters["r4"])
    rows = tiny.sentiment_examples(5, 7)
    conversations = [example_messages(r["instruction"], r["input"]) for r in rows]
    prompts = [render_prompt(engine.tokenizer, c) for c in conversations]
    shared = common_prefix_length(prompts)
    assert shared > 8 and all(p[:shared] == prompts[0][:shared] for p in prompts)
    suffixes, caches = prefill_shared_prefix(engine.model, prompts)
    assert [len(s) for s in suffixes] == [len(p) - shared for p in prompts] and caches[0][0].offset == shared
    assert prefill_shared_prefix(engine.model, prompts[:1]) == (prompts[:1], None)  # a single row: nothing shared
    assert prefill_shared_prefix(engine.model, [[1, 2, 3], [1, 2, 4]])[1] is None  # too short to pay off

    calls = []
    original = type(engine.model).__call__

    def counting(self, inputs, *args, **kwargs):
        calls.append(inputs.shape)
        return original(self, inputs, *args, **kwargs)

    type(engine.model).__call__ = counting
    try:
        batched = engine.generate_batch(conversations, "r4", max_tokens=6, batch_size=5, logprobs=True)
    finally:
        type(engine.model).__call__ = original
    assert calls[0] == (1, shared)  # the prefix, once
    assert calls[1][0] == 5 and calls[1][1] <= max(len(p) for p in prompts) - shared  # then only the rows' own tokens
    for conversation, text, mean in zip(conversations, batched.texts, batched.mean_logprobs):
        alone = engine.generate_batch([conversation], "r4", max_tokens=6, logprobs=True)
        assert alone.texts == [text]
        np.testing.assert_allclose(alone.mean_logprobs[0], mean, atol=1e-4)


def test_a_prompt_given_to_several_rows_is_prefilled_once(engine, adapters):
    """Votes are many samples of one prompt: each distinct prompt is prefilled once, whole, and its rows
    start from its cache with only its last token left; greedy rows answer exactly as the prompt alone,
    sampled rows still differ, and a row whose prompt is not repeated shares the others' common prefix."""
    from locomlx.engine.prefix import prefill_prompts
    from locomlx.prompt import example_messages, render_prompt

    engine.load_adapter(adapters["r4"])
    rows = tiny.sentiment_examples(3, 13)
    conversations = [example_messages(r["instruction"], r["input"]) for r in rows]
    prompts = [render_prompt(engine.tokenizer, c) for c in conversations]
    repeated = [prompts[0]] * 3 + [prompts[1]] * 2 + [prompts[2]]
    rest, caches = prefill_prompts(engine.model, repeated)
    assert rest[:5] == [prompts[0][-1:]] * 3 + [prompts[1][-1:]] * 2
    assert caches[0] is caches[2] and caches[3] is caches[4] and caches[0] is not caches[3]
    assert caches[0][0].offset == len(prompts[0]) - 1 and caches[3][0].offset == len(prompts[1]) - 1
    assert rest[5] == prompts[2] and caches[5] is None  # alone: nothing shared with itself
    assert prefill_prompts(engine.model, prompts)[0] != prompts  # no repeats: the shared prefix, as before

    calls = []
    original = type(engine.model).__call__

    def counting(self, inputs, *args, **kwargs):
        calls.append(inputs.shape)
        return original(self, inputs, *args, **kwargs)

    jobs = [conversations[0]] * 4 + [conversations[1]] * 4
    type(engine.model).__call__ = counting
    try:
        greedy = engine.generate_batch(jobs, "r4", max_tokens=6, batch_size=8, logprobs=True)
    finally:
        type(engine.model).__call__ = original
    assert calls[:2] == [(1, len(prompts[0]) - 1), (1, len(prompts[1]) - 1)]  # each prompt once
    assert calls[2] == (8, 1)  # then one token per row
    for conversation, block in ((conversations[0], slice(0, 4)), (conversations[1], slice(4, 8))):
        alone = engine.generate_batch([conversation], "r4", max_tokens=6, logprobs=True)
        assert greedy.texts[block] == alone.texts * 4
        np.testing.assert_allclose(greedy.mean_logprobs[block], alone.mean_logprobs * 4, atol=1e-4)
    sampled = engine.generate_batch([conversations[0]] * 6, "r4", max_tokens=6, temperature=1.5, seed=3)
    assert len(set(sampled.texts)) > 1


def test_continuous_batches_keep_the_callers_order_and_report_progress(engine):
    """More conversations than one batch, of different lengths: the engine sorts them by length and keeps its
    batch full as rows finish, yet each answer comes back in its conversation's place (equal to answering
    it alone), and progress is reported once per finished answer."""
    from locomlx.prompt import example_messages

    rows = tiny.sentiment_examples(7, 11)
    conversations = [example_messages(r["instruction"], r["input"] + " very" * (i % 4) * 5) for i, r in enumerate(rows)]
    progress = []
    batch = engine.generate_batch(conversations, max_tokens=5, batch_size=3,
                                  on_progress=lambda done, total: progress.append((done, total)))
    assert progress == [(i, 7) for i in range(1, 8)]
    assert batch.texts == [engine.generate_batch([c], max_tokens=5).texts[0] for c in conversations]


def test_prompts_join_a_wide_batch_a_few_at_a_time(engine, monkeypatch):
    """A decode batch wider than the prefill batch fills over several prefills, rows decoding meanwhile;
    the answers are still each conversation's own."""
    from locomlx.engine import batching
    from locomlx.prompt import example_messages

    monkeypatch.setattr(batching, "PREFILL_BATCH", 2)
    rows = tiny.sentiment_examples(7, 12)
    conversations = [example_messages(r["instruction"], r["input"] + " very" * (i % 3) * 4) for i, r in enumerate(rows)]
    batch = engine.generate_batch(conversations, max_tokens=5, batch_size=7)
    assert batch.texts == [engine.generate_batch([c], max_tokens=5).texts[0] for c in conversations]


def _step_logits(engine, tokens, compiled):
    """Teacher-forced one-token steps over `tokens`: compiled (engine/decode.py) or the model's own forward pass."""
    from mlx_lm.models.cache import make_prompt_cache

    caches = make_prompt_cache(engine.model)
    mx.eval(engine.model(mx.array([tokens[:1]]), cache=caches))
    rows = []
    for token in tokens[1:]:
        step_input = mx.array([[token]])
        if compiled:
            logits = engine.decoder.step(step_input, caches, engine.selection.active)
        else:
            logits = engine.model(step_input, cache=caches)[:, -1, :]
        rows.append(np.array(logits[0]))
    return np.stack(rows)


def test_compiled_decode_steps_match_the_models_forward_pass(engine, adapters):
    """Past the KV buffer's growth at 256 positions, with an adapter, after switching, and after an adapter
    is replaced by another of the same name (a compiled step must not keep the old weights)."""
    assert engine.decoder is not None  # float32 on the CPU
    tokens = [(i * 37 + 11) % 250 + 3 for i in range(300)]
    engine.load_adapter(adapters["r4"], name="x")
    for adapter in (None, "x", None):
        engine.select(adapter)
        np.testing.assert_allclose(_step_logits(engine, tokens, True), _step_logits(engine, tokens, False),
                                   rtol=1e-4, atol=1e-4)
    engine.select("x")
    with_r4 = _step_logits(engine, tokens[:20], True)
    engine.unload_adapter("x")
    engine.load_adapter(adapters["r16"], name="x")
    engine.select("x")
    with_r16 = _step_logits(engine, tokens[:20], True)
    np.testing.assert_allclose(with_r16, _step_logits(engine, tokens[:20], False), rtol=1e-4, atol=1e-4)
    assert not np.allclose(with_r4, with_r16, atol=1e-3)


def test_generation_gives_the_same_answer_with_and_without_compiled_steps(engine, adapters):
    engine.load_adapter(adapters["r4"])
    messages = [{"role": "user", "content": "the cat sat on the"}]
    engine.tokenizer.eos_token_ids = set()  # a long answer (the tiny model's context is 256 tokens)
    compiled = engine.generate(messages, adapter="r4", max_tokens=200)
    engine.decoder = None
    plain = engine.generate(messages, adapter="r4", max_tokens=200)
    assert compiled.generation_tokens == plain.generation_tokens == 200
    assert compiled.text == plain.text
