"""`locomlx train`: the standard adapter directory, resume-after-interrupt, refusals, and mlx-lm compatibility."""

import json

from locomlx.cli import main
from locomlx.data.training_log import RUN_MARKER, unfilled_lines
from locomlx.engine.engine import Engine
from locomlx.errors import LocomlxError
from locomlx.train.config import load_config
from locomlx.train.loop import TrainingInterrupted
from locomlx.train.trainer import resume_config, train

import mlx.core as mx
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from tests import tiny


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return {
        "train": tiny.write_jsonl(root / "train.jsonl", tiny.sentiment_examples(120, 0)),
        "bench": tiny.write_jsonl(root / "bench.jsonl", tiny.sentiment_examples(60, 0, skip=200)),
    }


def _config(tiny_model, data, out, **extra):
    values = {"dataset": str(data["train"]), "output": str(out), "base_model": str(tiny_model), "allow_small": True,
              "epochs": 0.5, "lora_rank": 4, "steps_per_eval": 5, "steps_per_save": 3, "adapters_dir": str(out.parent)}
    values.update(extra)
    return load_config(None, values)


def test_standard_adapter_directory(tiny_model, data, tmp_path):
    result = train(_config(tiny_model, data, tmp_path / "skill", benchmark=str(data["bench"])))
    out = result.output
    for name in ["adapter_config.json", "adapter_model.safetensors", "training/dataset.jsonl",
                 "training/train_config.yaml", "training/TRAINING_LOG.md", "training/loss.svg", "eval/benchmark.jsonl"]:
        assert (out / name).is_file(), name
    assert not (tmp_path / "skill.partial").exists() and not (out / "checkpoint").exists()
    record = yaml.safe_load((out / "training/train_config.yaml").read_text())
    assert record["config"]["lora_rank"] == 4 and len(record["dataset_sha256"]) == 64
    assert set(record["versions"]) == {"locomlx", "mlx", "mlx-lm", "python"}
    log = (out / "training/TRAINING_LOG.md").read_text()
    assert "| training examples | 108 |" in log and "## Review (at least 10% of the generated rows)" in log
    assert RUN_MARKER in log and "tokens/s" in log.split(RUN_MARKER)[1]
    assert "<polyline" in (out / "training/loss.svg").read_text()
    assert (out / "training/dataset.jsonl").read_bytes() == data["train"].read_bytes()


def test_adapter_loads_in_plain_mlx_lm_and_in_the_engine(tiny_model, data, tmp_path):
    from mlx_lm import load

    out = train(_config(tiny_model, data, tmp_path / "skill")).output
    tokens = mx.array([[5, 17, 42, 99, 7]])
    reference, _ = load(str(tiny_model), adapter_path=str(out))
    engine = Engine.load(str(tiny_model), "float32")
    engine.load_adapter(out)
    engine.select("skill")
    np.testing.assert_allclose(np.array(engine.model(tokens)), np.array(reference(tokens)), rtol=1e-5, atol=1e-5)
    engine.select(None)
    assert not np.allclose(np.array(engine.model(tokens)), np.array(reference(tokens)), atol=1e-4)


def test_training_changes_the_answer_distribution(tiny_model, data, tmp_path):
    """The loss is on answer tokens: the trained adapter raises the probability of the right label."""
    from locomlx.prompt import render_example

    out = train(_config(tiny_model, data, tmp_path / "skill", epochs=2, lr=1e-3)).output
    engine = Engine.load(str(tiny_model), "float32")
    engine.load_adapter(out)
    held_out = tiny.sentiment_examples(20, 0, skip=300)

    def answer_logprob(adapter):
        engine.select(adapter)
        total = 0.0
        for row in held_out:
            tokens, offset = render_example(engine.tokenizer, row["instruction"], row["input"], row["output"])
            logits = engine.model(mx.array([tokens]))[0]
            logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
            total += sum(logprobs[i - 1, tokens[i]].item() for i in range(offset, len(tokens)))
        return total / len(held_out)

    assert answer_logprob("skill") > answer_logprob(None) + 1.0


def test_resume_after_interrupt_matches_uninterrupted_run(tiny_model, data, tmp_path):
    full = train(_config(tiny_model, data, tmp_path / "full")).output

    def interrupt_at_7(state, point):
        if state.step == 7:
            raise KeyboardInterrupt

    config = _config(tiny_model, data, tmp_path / "resumed")
    with pytest.raises(TrainingInterrupted, match="checkpoint kept at step 7. Run the same command with --resume"):
        train(config, on_progress=interrupt_at_7)
    assert not (tmp_path / "resumed").exists()  # never a half-written adapter under the real name
    assert (tmp_path / "resumed.partial" / "checkpoint" / "state.json").is_file()
    with pytest.raises(LocomlxError, match="interrupted run exists .* --resume"):
        train(config)
    resumed = train(resume_config(tmp_path / "resumed"), resume=True).output
    a = mx.load(str(full / "adapter_model.safetensors"))
    b = mx.load(str(resumed / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(np.array(a[key]), np.array(b[key]), rtol=1e-5, atol=1e-6, err_msg=key)


def test_leaking_training_data_is_refused(tiny_model, data, tmp_path):
    leaky = tiny.write_jsonl(tmp_path / "leaky.jsonl", tiny.sentiment_examples(120, 0))
    bench = tiny.write_jsonl(tmp_path / "bench.jsonl", tiny.sentiment_examples(60, 0))
    config = _config(tiny_model, {"train": leaky}, tmp_path / "x", benchmark=str(bench))
    with pytest.raises(LocomlxError, match="same text as benchmark"):
        train(config)
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.partial").exists()


def test_existing_output_and_bad_options_are_refused(tiny_model, data, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "adapter_config.json").write_text("{}")
    with pytest.raises(LocomlxError, match=r"already holds a trained adapter \(adapter_config.json\); choose another"):
        train(_config(tiny_model, data, tmp_path / "taken"))
    with pytest.raises(LocomlxError, match="--target-modules mlp.nope_proj are not linear layers of the model's "
                                           "blocks; its linear layers: mlp.down_proj, mlp.gate_proj"):
        train(_config(tiny_model, data, tmp_path / "y", target_modules="mlp.nope_proj"))
    with pytest.raises(LocomlxError, match="--lora-rank must be at least 1"):
        _config(tiny_model, data, tmp_path / "z", lora_rank=0)
    bad_yaml = tmp_path / "train.yaml"
    bad_yaml.write_text("lora_rnk: 8\n")
    with pytest.raises(LocomlxError, match="unknown option\\(s\\) lora_rnk"):
        load_config(bad_yaml, {})
    with pytest.raises(LocomlxError, match="Nothing to resume"):
        resume_config(tmp_path / "never")


def test_cli_train_with_config_file(tiny_model, data, tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"dataset": str(data["train"]), "base_model": str(tiny_model), "epochs": 0.3,
                                      "lora_rank": 2, "allow_small": True}))
    result = CliRunner().invoke(main, ["train", "--config", str(config), "--output", str(tmp_path / "cli"),
                                       "--lora-rank", "4", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["steps"] >= 1 and summary["final_train_loss"] > 0
    adapter_config = json.loads((tmp_path / "cli" / "adapter_config.json").read_text())
    assert adapter_config["lora_parameters"]["rank"] == 4  # the flag overrides the file


def test_answer_loss_equals_full_logits_reference(tiny_model):
    """Scoring only the answer window gives the same loss as full logits masked to answer tokens."""
    from locomlx.models.anatomy import forward_split
    from locomlx.models.load import load_base
    from locomlx.models.resolve import resolve_model
    from locomlx.train.loop import answer_loss, answer_windows, collate

    model = load_base(resolve_model(str(tiny_model)), "float32").model
    items = [(list(range(5, 40)), 30), (list(range(50, 61)), 4), (list(range(70, 90)), 19)]
    batch, lengths = collate(items)
    split = forward_split(model)
    assert split is not None  # llama: trunk + head reproduce the model, so the head runs on answers only
    loss, ntoks = answer_loss(model, batch, *answer_windows(lengths), split)
    full_loss, _ = answer_loss(model, batch, *answer_windows(lengths), None)
    logits = model(batch[:, :-1])
    logprobs = np.array(logits - mx.logsumexp(logits, axis=-1, keepdims=True))
    tokens = np.array(batch)
    terms = [-logprobs[row, j, tokens[row, j + 1]] for row, (seq, offset) in enumerate(items)
             for j in range(offset - 1, len(seq) - 1)]
    assert ntoks.item() == len(terms) == 5 + 7 + 1
    np.testing.assert_allclose(loss.item(), np.mean(terms), rtol=1e-5)
    np.testing.assert_allclose(full_loss.item(), np.mean(terms), rtol=1e-5)


def _other_task(n: int, start: int = 0) -> list[dict]:
    return [{"instruction": "Add the numbers. Reply with the number only.",
             "input": f"{i} plus {i + 3} and then some {i}", "output": str(2 * i + 3)}
            for i in range(start, start + n)]


def test_replay_trains_on_the_base_models_own_answers(tiny_model, data, tmp_path):
    """--replay draws other tasks' questions (never their references), answers them with the base model, and
    mixes them into training; replay.jsonl and TRAINING_LOG.md record them."""
    from locomlx.prompt import example_messages

    other = tiny.write_jsonl(tmp_path / "other.jsonl", _other_task(40))
    result = train(_config(tiny_model, data, tmp_path / "skill", replay=[str(other)], replay_per_file=12,
                           replay_max_tokens=6))
    replayed = [json.loads(line) for line in (result.output / "training/replay.jsonl").read_text().splitlines()]
    assert len(replayed) == 12 and result.stats.replayed == 12
    engine = Engine.load(str(tiny_model), "float32")
    expected = engine.generate_batch([example_messages(r["instruction"], r["input"]) for r in replayed], None, 6)
    assert [r["output"] for r in replayed] == expected.texts  # the base's answers, not the file's references
    assert "| training examples | 119 |" in (result.output / "training/TRAINING_LOG.md").read_text()  # (120 + 12) x 0.9
    assert "| replay examples among training + validation" in (result.output / "training/TRAINING_LOG.md").read_text()
    assert (result.output / "training/dataset.jsonl").read_bytes() == data["train"].read_bytes()  # own data only


def test_replay_questions_skip_own_and_leaking_rows_and_cached_answers_are_reused(tiny_model, tmp_path):
    from locomlx.data.records import read_examples
    from locomlx.train.replay import base_answers, replay_questions

    other = tiny.write_jsonl(tmp_path / "other.jsonl", _other_task(30))
    own, _ = read_examples(tiny.write_jsonl(tmp_path / "own.jsonl", _other_task(5)))  # rows 0-4 are its own data
    bench = tiny.write_jsonl(tmp_path / "bench.jsonl", _other_task(1, start=7))  # row 7 is a benchmark question
    questions = replay_questions([str(other)], 30, own, [bench])
    assert sorted(int(q.input.split()[0]) for q in questions) == [i for i in range(30) if i >= 5 and i != 7]
    assert replay_questions([str(other)], 10, own, [bench]) == questions[:10]  # the same draw every time

    engine = Engine.load(str(tiny_model), "float32")
    first = base_answers(engine, questions[:4], 5)
    calls = []
    original = engine.generate_batch
    engine.generate_batch = (
        lambda conversations, *args, **kw: calls.append(len(conversations)) or original(conversations, *args, **kw)
    )
    again = base_answers(engine, questions[:6], 5)
    assert calls == [2] and again[:4] == first  # only the two new questions were generated


def test_questions_the_base_leaves_unanswered_are_not_replayed(tiny_model, data, tmp_path):
    """An empty replay target would teach the adapter to answer nothing outside its task: such rows are
    left out, and train says how many."""
    from locomlx.data.records import read_examples
    from locomlx.models.load import load_base
    from locomlx.models.resolve import resolve_model
    from locomlx.train.replay import _cache_path, _question_key, base_answers, replay_questions

    other = tiny.write_jsonl(tmp_path / "other.jsonl", _other_task(40, start=100))
    config = _config(tiny_model, data, tmp_path / "skill", replay=[str(other)], replay_per_file=12,
                     replay_max_tokens=6)
    own, _ = read_examples(data["train"])
    questions = replay_questions(config.replay, 12, own, [])
    base = load_base(resolve_model(config.base_model), config.compute_dtype)
    base_answers(Engine(base), questions, 6)
    cache = _cache_path(base, 6)
    answers = json.loads(cache.read_text())
    silent = questions[:5]
    answers.update({_question_key(q): text for q, text in zip(silent, [""] * 5)})
    cache.write_text(json.dumps(answers))

    messages = []
    result = train(config, on_message=messages.append)
    replayed = [json.loads(line) for line in (result.output / "training/replay.jsonl").read_text().splitlines()]
    assert [r["input"] for r in replayed] == [q.input for q in questions[5:]]
    assert result.stats.replayed == 7
    assert any("5 of them left out, the base model gave no answer" in m for m in messages)


def test_bad_replay_files_are_refused(tiny_model, data, tmp_path):
    with pytest.raises(LocomlxError, match="Replay file .*missing.jsonl does not exist"):
        _config(tiny_model, data, tmp_path / "x", replay=[str(tmp_path / "missing.jsonl")])
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(_other_task(1)[0]) + "\n{not json\n")
    with pytest.raises(LocomlxError, match="broken.jsonl.*2.*invalid JSON"):
        train(_config(tiny_model, data, tmp_path / "y", replay=[str(broken)]))
    assert not (tmp_path / "y").exists()


def test_cli_replay_option(tiny_model, data, tmp_path):
    other = tiny.write_jsonl(tmp_path / "other.jsonl", _other_task(20))
    result = CliRunner().invoke(main, ["train", "--dataset", str(data["train"]), "--base-model", str(tiny_model),
                                       "--output", str(tmp_path / "cli"), "--epochs", "0.2", "--lora-rank", "2",
                                       "--allow-small", "--replay", str(other), "--replay-per-file", "5",
                                       "--replay-max-tokens", "4"])
    assert result.exit_code == 0, result.output
    assert "Replay: 5 questions from 1 file(s)" in result.output
    assert len((tmp_path / "cli" / "training/replay.jsonl").read_text().splitlines()) == 5


def test_the_guide_s_layout_trains_in_place(tiny_model, data, tmp_path):
    """An adapter folder holding only its inputs is a valid --output: the benchmark is found in it, the data
    stays where it is, and everything the student wrote in TRAINING_LOG.md above the run record is kept."""
    folder = tmp_path / "adapters" / "skill"
    dataset = tiny.write_jsonl(folder / "training" / "dataset.jsonl", tiny.sentiment_examples(120, 0))
    bench = tiny.write_jsonl(folder / "eval" / "benchmark.jsonl", tiny.sentiment_examples(60, 0, skip=200))
    (folder / "training" / "generate.py").write_text("print('my generator')\n")
    student = "# Training log: skill\n\n## Sources\n\n- **Source**: my own sentences (CC0)\n"
    (folder / "training" / "TRAINING_LOG.md").write_text(student)
    before = {p: p.read_bytes() for p in (dataset, bench)}
    result = train(_config(tiny_model, {"train": dataset}, folder))
    assert result.output == folder and not (tmp_path / "adapters" / "skill.partial").exists()
    assert (folder / "adapter_config.json").is_file() and (folder / "adapters.safetensors").is_symlink()
    assert {p: p.read_bytes() for p in (dataset, bench)} == before
    record = yaml.safe_load((folder / "training" / "train_config.yaml").read_text())
    assert record["config"]["benchmark"] == str(bench)
    log = (folder / "training" / "TRAINING_LOG.md").read_text()
    assert log.startswith(student.rstrip()) and log.count(RUN_MARKER) == 1 and "| steps |" in log
    with pytest.raises(LocomlxError, match="already holds a trained adapter"):
        train(_config(tiny_model, {"train": dataset}, folder))
    assert (folder / "training" / "generate.py").is_file()


def test_a_log_from_the_template_lists_what_is_left_to_fill_in(tiny_model, data, tmp_path):
    log = (train(_config(tiny_model, data, tmp_path / "skill")).output / "training" / "TRAINING_LOG.md").read_text()
    assert log.startswith("# Training log: skill") and len(unfilled_lines(log)) >= 8
    filled = log.replace("(fill in)", "done")
    assert unfilled_lines(filled) == []


def test_long_rows_are_counted_apart_for_replay(tiny_model, data, tmp_path):
    other = tiny.write_jsonl(tmp_path / "other.jsonl", _other_task(40))
    messages = []
    train(_config(tiny_model, data, tmp_path / "skill", replay=[str(other)], replay_per_file=12, replay_max_tokens=6,
                  max_seq_length=100), on_message=messages.append)
    (line,) = [m for m in messages if "longer than --max-seq-length 100" in m]
    assert "truncated (" in line and " of your data, 0 replayed)" in line
    with pytest.raises(LocomlxError, match="Every training example is longer than --max-seq-length 24"):
        train(_config(tiny_model, data, tmp_path / "none-left", max_seq_length=24, long_examples="drop"))
