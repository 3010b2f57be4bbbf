"""`locomlx fuse` and `locomlx export`: the fused model, PEFT and llama.cpp LoRA files give the adapter's answers
in their own runtimes (mlx-lm, transformers + PEFT, llama.cpp), and a llama.cpp LoRA installs back."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from locomlx.adapters.format import read_adapter
from locomlx.adapters.gguf_lora import read_gguf_lora, rope_permute
from locomlx.cli import main
from locomlx.engine.engine import Engine
from locomlx.export.fuse import check_fused, fuse_adapter
from locomlx.export.gguf import export_gguf_lora
from locomlx.export.peft import export_peft

import mlx.core as mx
import numpy as np
import pytest
from click.testing import CliRunner

from tests import tiny

TOKENS = [5, 17, 42, 99, 7, 3, 60, 11]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def library(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("library")
    tiny.make_adapter(root / "alpha", tiny_model, rank=4, seed=11,
                      keys=("self_attn.q_proj", "self_attn.k_proj", "mlp.down_proj"))
    tiny.make_adapter(root / "beta", tiny_model, rank=8, scale=1.0, seed=12, keys=("self_attn.v_proj",))
    tiny.make_adapter(root / "faint", tiny_model, rank=4, scale=0.002, seed=13)
    return root


def _deltas(adapter):
    return {m: np.array(adapter.scale * (a.astype(mx.float32) @ b.astype(mx.float32)))
            for m, (a, b) in adapter.layers.items()}


def _logits(engine, adapter):
    engine.select(adapter)
    return np.array(engine.model(mx.array([TOKENS]))[0])


def test_fused_model_equals_base_plus_adapter_composition_included(tiny_model, library, tmp_path):
    engine = Engine.load(str(tiny_model), "float32")
    for name in ("alpha", "beta"):
        engine.load_adapter(library / name)
    for spec in ("alpha", "alpha:0.7+beta:0.3"):
        fused = fuse_adapter(spec, library, tmp_path / spec.replace(":", "_"), str(tiny_model))
        merged = Engine.load(str(fused), "float32")
        np.testing.assert_allclose(_logits(merged, None), _logits(engine, engine.compose(spec)), atol=2e-4)
    from mlx_lm import load

    model, _ = load(str(tmp_path / "alpha"))  # mlx-lm itself reads the fused folder
    np.testing.assert_allclose(np.array(model(mx.array([TOKENS]))[0]), _logits(engine, "alpha"), atol=2e-4)


def test_fusing_into_a_4bit_base_keeps_float_unless_told_and_says_when_the_update_is_gone(tiny_model_4bit, library,
                                                                                          tmp_path):
    kept = fuse_adapter("faint", library, tmp_path / "kept", str(tiny_model_4bit))
    config = json.loads((kept / "config.json").read_text())
    assert config["quantization"]["model.layers.0.self_attn.q_proj"] is False
    check = check_fused("faint", library, kept, ["hi there"], str(tiny_model_4bit), max_tokens=4)
    assert not check.erased and check.max_logit_difference < 1e-3
    result = CliRunner().invoke(main, ["fuse", "faint", "--requantize", "--strict", "--adapters-dir", str(library),
                                       "--base-model", str(tiny_model_4bit), "--output", str(tmp_path / "requant")])
    assert result.exit_code == 2 and "erased most of its effect" in result.output


def test_peft_export_reads_back_exactly(tiny_model, library, tmp_path):
    out = export_peft(read_adapter(library / "alpha"), tmp_path / "peft", str(tiny_model))
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 8.0
    assert sorted(config["target_modules"]) == ["down_proj", "k_proj", "q_proj"]
    back, original = _deltas(read_adapter(out)), _deltas(read_adapter(library / "alpha"))
    assert back.keys() == original.keys()
    for module in back:
        np.testing.assert_allclose(back[module], original[module], atol=1e-6)


@pytest.mark.skipif(importlib.util.find_spec("peft") is None, reason="needs the [torch] extra (torch + peft)")
def test_peft_export_gives_the_same_logits_in_transformers(tiny_model, library, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import LlamaConfig, LlamaForCausalLM

    config = json.loads((tiny_model / "config.json").read_text())
    hf = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in config.items() if k != "quantization"}))
    weights = {k: torch.tensor(np.array(v)) for k, v in mx.load(str(tiny_model / "model.safetensors")).items()}
    hf.load_state_dict(weights, strict=False)
    if config.get("tie_word_embeddings", True):
        hf.tie_weights()
    model = PeftModel.from_pretrained(hf.eval(), export_peft(read_adapter(library / "alpha"), tmp_path / "p", "tiny"))
    with torch.no_grad():
        theirs = model(torch.tensor([TOKENS])).logits[0].numpy()
    engine = Engine.load(str(tiny_model), "float32")
    engine.load_adapter(library / "alpha")
    np.testing.assert_allclose(theirs, _logits(engine, "alpha"), atol=1e-4)


def test_gguf_lora_round_trip_and_install(tiny_model, library, tmp_path):
    config = json.loads((tiny_model / "config.json").read_text())
    lora = export_gguf_lora(read_adapter(library / "alpha"), tmp_path / "alpha.lora.gguf", config)
    import gguf

    reader = gguf.GGUFReader(str(lora))
    assert reader.fields["general.type"].contents() == "adapter"
    assert reader.fields["adapter.type"].contents() == "lora"
    assert reader.fields["adapter.lora.alpha"].contents() == pytest.approx(8.0)
    names = {t.name: t.data.shape for t in reader.tensors}
    assert names["blk.0.attn_q.weight.lora_a"] == (4, config["hidden_size"])  # (rank, in), llama.cpp's order
    back = _deltas(read_adapter(read_gguf_lora(lora, config, tmp_path / "back")))
    original = _deltas(read_adapter(library / "alpha"))
    for module in original:
        np.testing.assert_allclose(back[module], original[module], atol=1e-5)
    rows = np.arange(48.0).reshape(16, 3)
    assert not np.array_equal(rope_permute(rows, 2), rows)
    np.testing.assert_array_equal(rope_permute(rope_permute(rows, 2), 2, inverse=True), rows)


def test_a_llama_cpp_lora_installs_into_the_library(tiny_model, tmp_path):
    from tests.test_registry_fixtures import new_library, write_adapter

    library = new_library(tmp_path, tiny_model)
    source = write_adapter(tmp_path / "outside" / "made", tiny_model, seed=4)
    config = json.loads((tiny_model / "config.json").read_text())
    lora = export_gguf_lora(read_adapter(source), tmp_path / "made.lora.gguf", config)
    refused = CliRunner().invoke(main, ["adapters", "install", str(lora), "--domain", "sentiment",
                                        "--adapters-dir", str(library)])
    assert refused.exit_code == 1 and "has no eval/benchmark.jsonl" in refused.output
    result = CliRunner().invoke(main, ["adapters", "install", str(lora), "--domain", "sentiment", "--adapters-dir",
                                       str(library), "--benchmark", str(source / "eval" / "benchmark.jsonl")])
    assert result.exit_code == 0, result.output
    installed, original = _deltas(read_adapter(library / "made")), _deltas(read_adapter(source))
    for module in original:
        np.testing.assert_allclose(installed[module], original[module], atol=1e-5)


@pytest.mark.real
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                    reason="needs llama-cpp-python (pip install llama-cpp-python: builds llama.cpp)")
def test_llama_cpp_runs_the_exported_lora_like_locomlx(real_engine, tmp_path):
    """llama.cpp itself loads the embedded base GGUF with the exported LoRA: the adapter's effect matches."""
    from locomlx.models.resolve import builtin_gguf_path


    adapter = read_adapter(ROOT / "adapters" / "sentiment-rt")
    config = json.loads((real_engine.base.resolved.path / "config.json").read_text())
    lora = export_gguf_lora(adapter, tmp_path / "s.lora.gguf", config)
    base_gguf = str(builtin_gguf_path("smollm2-135m"))
    tokens = real_engine.tokenizer.encode("Is this movie review positive or negative? A gorgeous, moving film.")

    def llama_logits(lora_path):
        """In a process of its own: a crash inside llama.cpp fails this test, not the whole run."""
        script = ("import json, os, sys, numpy as np, llama_cpp\n"
                  "gguf, lora, tokens = sys.argv[1], sys.argv[2] or None, json.loads(sys.argv[3])\n"
                  "m = llama_cpp.Llama(gguf, lora_path=lora, n_ctx=256, verbose=False, n_threads=os.cpu_count())\n"
                  "m.eval(tokens)\n"
                  "print(json.dumps(np.ctypeslib.as_array(llama_cpp.llama_get_logits(m.ctx),"
                  " shape=(m.n_vocab(),)).tolist()))\n")
        run = subprocess.run([sys.executable, "-c", script, base_gguf, lora_path or "", json.dumps(tokens)],
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, f"llama.cpp failed (exit {run.returncode}): {run.stderr[-500:]}"
        return np.array(json.loads(run.stdout.splitlines()[-1]))

    if "sentiment-rt" not in real_engine.adapters:
        real_engine.load_adapter(ROOT / "adapters" / "sentiment-rt")
    ours_base, ours = _last(real_engine, None, tokens), _last(real_engine, "sentiment-rt", tokens)
    theirs_base, theirs = llama_logits(None), llama_logits(str(lora))
    effect = np.abs(ours - ours_base).max()
    # llama.cpp's own arithmetic moves the base's logits by about 0.4 here; the adapter's update must land within a
    # quarter of its size (measured: 0.61 of 4.78; with the q/k rows left in mlx-lm's order it was 1.83).
    assert effect > 1.0 and np.abs((theirs - theirs_base) - (ours - ours_base)).max() < 0.25 * effect
    assert theirs.argmax() == ours.argmax()


def _last(engine, adapter, tokens):
    engine.select(adapter)
    return np.array(engine.model(mx.array([tokens]))[0, -1])


def test_fused_gguf_is_the_base_gguf_with_the_fused_layers(tiny_model, library, tmp_path):
    base_gguf = tmp_path / "tiny.gguf"
    tiny.write_gguf(tiny_model, base_gguf, "Q8_0")
    out = tmp_path / "g"
    result = CliRunner().invoke(main, ["export", "alpha", "--format", "gguf", "--fused", "--adapters-dir",
                                       str(library), "--base-model", str(base_gguf), "--output", str(out)])
    assert result.exit_code == 0, result.output
    import gguf

    fused, base = gguf.GGUFReader(str(out / "alpha.fused.gguf")), gguf.GGUFReader(str(base_gguf))
    types = {t.name: t.tensor_type for t in fused.tensors}
    assert types["blk.0.attn_q.weight"] == gguf.GGMLQuantizationType.F16  # fused: float
    assert types["blk.0.attn_v.weight"] == gguf.GGMLQuantizationType.Q8_0  # untouched: copied as it was
    assert fused.fields["tokenizer.ggml.tokens"].contents() == base.fields["tokenizer.ggml.tokens"].contents()
    modelfile = (out / "Modelfile").read_text()
    assert modelfile.startswith(f"FROM {(out / 'alpha.fused.gguf').resolve()}") and "ADAPTER" not in modelfile
    # Read back by locomlx's own GGUF conversion, the fused file answers as base + adapter does.
    engine = Engine.load(str(base_gguf), "float32")
    engine.load_adapter(library / "alpha")
    merged = Engine.load(str(out / "alpha.fused.gguf"), "float32")
    np.testing.assert_allclose(_logits(merged, None), _logits(engine, "alpha"), atol=0.05)
