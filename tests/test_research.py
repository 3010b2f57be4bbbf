"""The research studies (scripts/research/): each runs --quick on a tiny library and writes its page, plot and
numbers; the low-bit formats they measure are checked against MLX's own kernels."""

import json
import subprocess
import sys
from pathlib import Path

from locomlx.cli import main
from locomlx.data.checks import leaking_training_rows
from locomlx.engine.engine import Engine
from locomlx.models.load import load_base
from locomlx.models.lowbit import FORMATS, LowBitFormat, pack_model, quantizable, requantize, round_trip, stored_bytes
from locomlx.models.resolve import resolve_model

import mlx.core as mx
import mlx.nn as nn
import pytest
import yaml
from click.testing import CliRunner

from tests import tiny
from tests.test_registry_fixtures import add_adapter, new_library

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts" / "research"


@pytest.fixture()
def two_domains(tmp_path, tiny_model):
    """A library of two active adapters in two domains, each with its benchmark and results."""
    library = new_library(tmp_path, tiny_model)
    add_adapter(library, tiny_model, "sentiment-a", domain="sentiment", seed=1, keywords=["review"])
    add_adapter(library, tiny_model, "spam-a", domain="spam", seed=2, keywords=["offer"])
    for name in ("sentiment-a", "spam-a"):
        result = CliRunner().invoke(main, ["promote", name, "--adapters-dir", str(library)])
        assert result.exit_code == 0, result.output
    return library


def _run_quick(script: str, library: Path, out: Path, *extra: str) -> dict:
    done = subprocess.run([sys.executable, str(SCRIPTS / script), "--quick", "--adapters-dir", str(library),
                           "--out", str(out), *extra], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    page = out.with_suffix(".md").read_text()
    # the page names the command as run: every argument that changes the numbers, none that only names a place
    assert f"python scripts/research/{script} --quick --adapters-dir {library}" in page
    assert str(out) not in page and "--out" not in page and "--work" not in page
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    return json.loads(out.with_suffix(".json").read_text())


def test_ternary_is_three_levels_per_group_and_packs_into_mlx_2_bit_exactly():
    weight = mx.random.normal((32, 128), key=mx.random.key(0))
    for fmt in (FORMATS["ternary-g64"], FORMATS["ternary-tensor"]):
        size = fmt.group_size or weight.size
        rounded = round_trip(weight, fmt)
        for group, original in zip(rounded.reshape(-1, size).tolist(), weight.reshape(-1, size).tolist()):
            scale = sum(abs(w) for w in original) / size  # BitNet's absmean
            assert {round(v / scale) for v in group} <= {-1, 0, 1}
            assert max(abs(v - round(v / scale) * scale) for v in group) < 1e-5
        linear = nn.Linear(128, 32, bias=False)
        linear.weight = weight
        model = nn.Sequential(linear)
        pack_model(model, fmt)
        assert isinstance(model.layers[0], nn.QuantizedLinear) and model.layers[0].bits == 2
        x = mx.random.normal((4, 128), key=mx.random.key(1))
        assert mx.allclose(model(x), x @ rounded.T, atol=1e-4)  # the 2-bit kernel computes the ternary weights


def test_affine_formats_round_like_mlx_and_lose_more_with_fewer_bits():
    weight = mx.random.normal((16, 256), key=mx.random.key(2))
    errors = []
    for name in ("q8", "q6", "q4", "q3", "q2"):
        fmt = FORMATS[name]
        rounded = round_trip(weight, fmt)
        expected = mx.dequantize(*mx.quantize(weight, group_size=64, bits=fmt.bits), group_size=64, bits=fmt.bits)
        assert mx.array_equal(rounded, expected)
        errors.append(float(mx.mean((rounded - weight) ** 2)))
    assert errors == sorted(errors) and errors[0] < 1e-4 < errors[-1]


@pytest.mark.parametrize("source", ["tiny_model", "tiny_model_4bit"])
def test_a_requantized_base_keeps_its_shapes_its_own_cache_key_and_stores_fewer_bytes(source, request):
    """From float weights, and from 4-bit ones (whose float32 layers are packed for the decode kernel)."""
    tiny_model = request.getfixturevalue(source)
    base = load_base(resolve_model(str(tiny_model)), "float32")
    before = {name: m.weight for name, m in quantizable(base.model)}
    layers = [m for _, m in base.model.named_modules() if isinstance(m, (nn.Linear, nn.Embedding))]
    assert before and len(before) == len(layers)  # every linear layer and the embedding
    full = stored_bytes(base.model, None)
    four, two = stored_bytes(base.model, FORMATS["q4"]), stored_bytes(base.model, FORMATS["ternary-g64"])
    assert two < four < full
    rounded = requantize(base, FORMATS["q3"])
    assert rounded.resolved.source_hash.endswith("+q3") and rounded.resolved.path == base.resolved.path
    after = dict(quantizable(rounded.model))
    for name, weight in before.items():
        assert after[name].weight.shape == weight.shape and not mx.array_equal(after[name].weight, weight)
        assert mx.array_equal(after[name].weight, round_trip(weight, FORMATS["q3"]))
    engine = Engine(rounded)
    assert engine.generate([{"role": "user", "content": "hello"}], max_tokens=3).text is not None
    with pytest.raises(Exception, match="float32"):
        requantize(load_base(resolve_model(str(tiny_model)), "quantized"), LowBitFormat("q4", 4, 64))


def test_the_lowbit_study_runs_quick_and_reports_every_format_and_domain(two_domains, tmp_path):
    out = tmp_path / "research" / "lowbit"
    facts = _run_quick("lowbit_study.py", two_domains, out)
    assert [c["format"] for c in facts["costs"]] == facts["formats"] == ["original", "q4", "ternary-g64"]
    assert all(c["decode_tokens_per_second"] > 0 for c in facts["costs"])
    original, q4, ternary = facts["costs"]
    assert ternary["stored_mb"] < q4["stored_mb"] < original["stored_mb"]
    assert [d["domain"] for d in facts["domains"]] == ["sentiment", "spam"]
    for d in facts["domains"]:
        assert list(d["scores"]) == facts["formats"]
        assert 0 <= d["scores"]["ternary-g64"]["adapter"]["score"] <= 1
        assert d["scores"]["original"]["base"]["p_vs_original"] == 1.0
    page = out.with_suffix(".md").read_text()
    assert "| ternary-g64 | 1.58 |" in page and "## Where quality breaks" in page
    # a run of one domain redoes it and keeps the other, each section naming its command
    again = _run_quick("lowbit_study.py", two_domains, out, "--domains", "spam")
    assert [d["domain"] for d in again["domains"]] == ["spam", "sentiment"]
    assert again["domains"][1] == facts["domains"][0] | {"written_by": again["domains"][1]["written_by"]}
    assert "--domains spam` (" in out.with_suffix(".md").read_text()


def _record_recipe(folder: Path, replay_rows: int) -> None:
    """What `locomlx train` leaves in an adapter folder: its recipe, and the replay questions it used."""
    recipe = {"lora_rank": 4, "epochs": 0.25, "lr": 1e-3, "batch_size": 4, "max_seq_length": 128, "val_fraction": 0.1,
              "replay_max_tokens": 4}
    (folder / "training" / "train_config.yaml").write_text(yaml.safe_dump({"config": recipe}))
    rows = [{"instruction": "Add the numbers.", "input": f"{i} plus {i + 3}", "output": str(2 * i + 3)}
            for i in range(replay_rows)]
    tiny.write_jsonl(folder / "training" / "replay.jsonl", rows)


def test_the_data_size_study_trains_each_size_with_replay_in_proportion_and_reuses_its_adapters(two_domains,
                                                                                                 tmp_path):
    for name in ("sentiment-a", "spam-a"):
        _record_recipe(two_domains / name, replay_rows=40)
    out, work = tmp_path / "research" / "data-size", tmp_path / "work"
    facts = _run_quick("data_size_study.py", two_domains, out, "--domains", "sentiment,spam", "--work", str(work))
    assert [d["domain"] for d in facts["domains"]] == ["sentiment", "spam"]
    for domain in facts["domains"]:
        assert [r["examples"] for r in domain["rows"]] == [25, 50] and domain["pool_from"] == "stored"
        assert [r["replayed"] for r in domain["rows"]] == [2, 4]  # 40 replayed beside 500: the same share
        assert all(0 <= r["score"] <= 1 and 0 <= r["p_vs_base"] <= 1 for r in domain["rows"])
    trained = work / "sentiment-a-n25"
    assert (trained / "adapter_config.json").is_file()
    assert len((trained / "training" / "dataset.jsonl").read_text().splitlines()) == 25
    stamp = (trained / "adapter_model.safetensors").stat().st_mtime_ns
    again = _run_quick("data_size_study.py", two_domains, out, "--domains", "sentiment", "--work", str(work))
    assert (trained / "adapter_model.safetensors").stat().st_mtime_ns == stamp  # found, not retrained
    assert again["domains"][0]["rows"][0]["score"] == facts["domains"][0]["rows"][0]["score"]
    # the rerun redid sentiment only; spam stays on the page, with the command that measured it
    assert [d["domain"] for d in again["domains"]] == ["sentiment", "spam"]
    assert again["domains"][1] == {**facts["domains"][1], "written_by": again["domains"][1]["written_by"]}
    page = out.with_suffix(".md").read_text()
    assert "--domains sentiment` (" in page and "--domains sentiment,spam` (" in page and "min: spam)" in page
    assert "## The answer" in page and page.count("## spam") == 1


def test_the_data_size_page_says_when_replay_lost_its_share_and_when_more_data_scored_lower():
    sys.path.insert(0, str(SCRIPTS))
    from data_size_study import falls_after, flattens_at, replay_note

    rows = [{"examples": n, "replayed": r, "score": s, "p_vs_best": p}
            for n, r, s, p in ((200, 60, 0.87, 0.01), (500, 150, 0.91, 1.0), (1000, 150, 0.83, 0.003))]
    domain = {"recipe_examples": 500, "rows": rows}
    assert replay_note(domain) == ("Above 500 examples the replay stays at the recipe's 150 questions (there are no "
                                   "more), so its share of the mix falls from 23% to 13% at 1000.")
    assert flattens_at(domain) == 500
    assert falls_after(domain) == "; at 1000 the score falls significantly (0.830, p 0.003 against 500)"
    rows[2]["p_vs_best"] = 0.2  # not significantly lower: nothing to say
    assert falls_after(domain) == ""
    assert replay_note({"recipe_examples": 500, "rows": rows[:2]}) == ""  # no size above the recipe's


def test_a_study_page_keeps_other_domains_only_when_measured_under_the_same_conditions(tmp_path, capsys):
    sys.path.insert(0, str(SCRIPTS))
    from study_files import with_kept_domains, written_by

    out = tmp_path / "page"
    first = {"limit": 50, "seconds": 60.0, "domains": [{"domain": "math"}, {"domain": "spam"}]}
    out.with_suffix(".json").write_text(json.dumps(with_kept_domains(out, first, "study --limit 50", ("limit",))))
    second = with_kept_domains(out, {"limit": 50, "seconds": 120.0, "domains": [{"domain": "spam"}]},
                               "study --limit 50 --domains spam", ("limit",))
    assert [d["domain"] for d in second["domains"]] == ["spam", "math"]
    assert written_by(second) == ("`study --limit 50 --domains spam` (2.0 min: spam) and "
                                  "`study --limit 50` (1.0 min: math)")
    other = with_kept_domains(out, {"limit": 100, "seconds": 60.0, "domains": [{"domain": "spam"}]},
                              "study --limit 100", ("limit",))
    assert [d["domain"] for d in other["domains"]] == ["spam"] and written_by(other) == "`study --limit 100` (1.0 min)"
    assert "measured with other limit" in capsys.readouterr().err
    out.with_suffix(".json").write_text(json.dumps(first))  # a page that names no command cannot be joined
    with pytest.raises(SystemExit, match="does not say which command measured math"):
        with_kept_domains(out, {"limit": 50, "seconds": 1.0, "domains": [{"domain": "spam"}]}, "study", ("limit",))


def test_the_re2_votes_study_chooses_a_temperature_and_compares_every_decoding_with_greedy(two_domains, tmp_path):
    out = tmp_path / "research" / "re2-votes"
    facts = _run_quick("re2_votes_study.py", two_domains, out, "--work", str(tmp_path / "work"))
    assert [d["domain"] for d in facts["domains"]] == ["sentiment", "spam"]
    for domain in facts["domains"]:
        assert domain["temperature"] == 0.7 and set(domain["validation_scores"]) == {"0.7"}
        assert [(r["votes"], r["reread"]) for r in domain["rows"]] == [(v, re2) for re2 in (False, True)
                                                                       for v in (1, 2, 3)]
        greedy, *others = domain["rows"]
        assert greedy["gain"] is None and all(r["gain"] is not None and 0 <= r["p_value"] <= 1 for r in others)
        assert all(r["cost"] > 0 for r in others) and all(r["n_examples"] == 6 for r in domain["rows"])
        for row in others:  # every vote count timed on its own, its cost over greedy's timed latency
            assert row["cost"] == pytest.approx(row["latency_seconds"] / greedy["latency_seconds"])
    pools = sorted((tmp_path / "work").glob("pool-*.json"))
    assert len(pools) == 4  # one per domain and RE2 setting
    sys.path.insert(0, str(SCRIPTS))
    import re2_votes_study
    for pool in map(json.loads, map(Path.read_text, pools)):  # whole chunks of questions, 3 samples each
        assert len(pool["questions"]) >= 6 and {len(q) for q in pool["questions"]} == {3}
        assert len(pool["chunk_seconds_per_question"]) == -(-len(pool["questions"]) // re2_votes_study.POOL_CHUNK)
        assert set(pool["latency_per_question"]) == {"1", "2", "3"}
    timed = {(d["domain"], r["reread"], r["votes"]): r["latency_seconds"] for d in facts["domains"] for r in d["rows"]}
    assert sorted(timed.values()) == sorted(t for p in map(json.loads, map(Path.read_text, pools))
                                            for t in p["latency_per_question"].values())
    kept = [p.read_text() for p in pools]
    _run_quick("re2_votes_study.py", two_domains, out, "--work", str(tmp_path / "work"))
    assert [p.read_text() for p in pools] == kept  # a rerun samples nothing again
    page = out.with_suffix(".md").read_text()
    assert "| RE2, 3 votes |" in page and "## The answer" in page


def test_a_pool_paused_in_one_chunk_keeps_its_latency_and_speed():
    sys.path.insert(0, str(SCRIPTS))
    import re2_votes_study

    pool = {"questions": [[]] * 48, "tokens": 480, "seconds": 1.0 + 1.0 + 600.0,
            "chunk_seconds_per_question": [0.06, 0.07, 37.5]}
    assert re2_votes_study.seconds_per_question(pool) == 0.07
    assert re2_votes_study.tokens_per_second(pool) == pytest.approx(10 / 0.07)
    del pool["chunk_seconds_per_question"]  # a pool saved before chunks were timed
    assert re2_votes_study.seconds_per_question(pool) == pytest.approx(602.0 / 48)
    assert re2_votes_study.tokens_per_second(pool) == pytest.approx(480 / 602.0)


def test_the_ensembles_study_trains_variants_and_compares_the_vote_with_the_best_single_member(two_domains,
                                                                                                tmp_path):
    for name in ("sentiment-a", "spam-a"):
        _record_recipe(two_domains / name, replay_rows=10)
    out, work = tmp_path / "research" / "ensembles", tmp_path / "work"
    facts = _run_quick("ensembles_study.py", two_domains, out, "--work", str(work))
    for domain in facts["domains"]:
        active = domain["active"]
        assert domain["members"] == [active, f"{active}-seed", f"{active}-rank8"]
        singles, votes = domain["rows"][:3], domain["rows"][3:]
        assert [r["what"] for r in singles] == ["library adapter (active)", "seed 1", "lora_rank 8, lora_alpha 16"]
        best = max(singles, key=lambda r: r["score"])
        assert "(best)" in best["decoding"] and domain["best_single"] == best["model"]
        assert [r["what"] for r in votes] == ["vote", "vote"] and all(r["p_value"] is not None for r in votes)
        assert all(abs(r["gain"] - (r["score"] - best["score"])) < 1e-9 for r in votes)
    assert (work / "spam-a-rank8" / "adapter_config.json").is_file()
    assert "## The answer" in out.with_suffix(".md").read_text()


def test_a_study_refuses_a_domain_or_variant_it_cannot_run_before_training_anything(two_domains, tmp_path):
    work = tmp_path / "work"

    def refused(*extra: str) -> str:
        done = subprocess.run([sys.executable, str(SCRIPTS / "ensembles_study.py"), "--adapters-dir",
                               str(two_domains), "--out", str(tmp_path / "page"), "--work", str(work), *extra],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode != 0
        return done.stderr

    assert "no active adapter for math" in refused("--domains", "spam,math")
    assert "Active: sentiment, spam" in refused("--domains", "math")
    assert "unknown width; choose from seed, rank" in refused("--variants", "seed,width")
    assert "spam has one adapter (spam-a) and no variant" in refused("--domains", "spam", "--variants", "")
    assert not work.exists() and not (tmp_path / "page.md").exists()


def test_the_composition_study_scores_each_part_of_a_two_skill_question_by_its_own_metric(two_domains, tmp_path):
    sentiment = two_domains / "sentiment-a" / "eval"
    rows = [{**json.loads(line), "choices": ["positive", "negative"], "metric": "choice"}
            for line in (sentiment / "benchmark.jsonl").read_text().splitlines()]
    tiny.write_jsonl(sentiment / "benchmark.jsonl", rows)
    results = json.loads((sentiment / "results.json").read_text())
    (sentiment / "results.json").write_text(json.dumps({**results, "metric": "choice"}))
    sums = [{"instruction": "Add the numbers.", "input": f"{i} plus {i + 2}", "output": str(2 * i + 2)}
            for i in range(50)]
    tiny.write_jsonl(two_domains / "spam-a" / "eval" / "benchmark.jsonl", sums)
    out = tmp_path / "research" / "composition"
    facts = _run_quick("composition_study.py", two_domains, out, "--work", str(tmp_path / "work"))
    (pair,) = facts["pairs"]
    assert pair["pair"] == "sentiment+spam" and pair["n"] == 6 and pair["metrics"] == ["choice", "exact_match"]
    models = [r["model"] for r in pair["rows"]]
    assert models[:3] == ["base", "sentiment-a alone", "spam-a alone"] and models[-1] == "routed (arrow)"
    assert "composition sentiment-a:0.3+spam-a:0.7" in models and "composition sentiment-a:1+spam-a:1" in models
    for row in pair["rows"]:
        for part in ("first", "second"):
            assert row["both"]["score"] <= row[part]["score"] <= 1
    assert sum(pair["rows"][-1]["picks"].values()) == 6
    benchmark = (tmp_path / "work" / "sentiment+spam.jsonl").read_text().splitlines()
    assert json.loads(benchmark[0])["output"] == f"{rows[0]['output']} | {sums[0]['output']}"
    answer = out.with_suffix(".md").read_text().split("## The answer", 1)[1]
    best_sentiment = max(r["first"]["score"] for r in pair["rows"] if r["model"].startswith("composition"))
    assert f"the best composition for each part scores sentiment {best_sentiment:.3f} at " in answer


def test_a_two_part_reply_is_scored_part_by_part():
    sys.path.insert(0, str(SCRIPTS))
    from locomlx.data.records import Example

    import composition_study

    review = Example(1, "Sentiment?", "a joyless film", "negative", {"choices": ["positive", "negative"]})
    total = Example(1, "Add.", "3 plus 4", "7")
    first, second = {"metric": "choice", "examples": [review] * 3}, {"metric": "exact_match", "examples": [total] * 3}
    scored = composition_study._parts(["negative | 7", "positive | 7", "negative | 8"], first, second)
    assert scored["first"]["per_example"] == [1.0, 0.0, 1.0] and scored["second"]["per_example"] == [1.0, 1.0, 0.0]
    assert scored["both"]["per_example"] == [1.0, 0.0, 0.0]
    pairs = composition_study.pairs_of([{"domain": "a", "metric": "choice", "choices": {"yes", "no"}},
                                        {"domain": "b", "metric": "choice", "choices": {"yes", "maybe"}},
                                        {"domain": "c", "metric": "exact_match", "choices": set()},
                                        {"domain": "d", "metric": "rouge_l", "choices": set()}])
    assert [(x["domain"], y["domain"]) for x, y in pairs] == [("a", "c"), ("b", "c")]


def test_the_scaling_study_grows_views_of_the_library_and_measures_each_size(two_domains, tmp_path):
    out, work = tmp_path / "research" / "scaling", tmp_path / "work"
    general = [{"query": f"Who named the {s} of year {y}?", "split": "train" if y % 10 < 7 else "heldout"}
               for s in ("rivers", "kings", "planets") for y in range(1900, 1930)]
    tiny.write_jsonl(two_domains / "router" / "general.jsonl", general)  # the router's no-specialist queries
    facts = _run_quick("scaling_study.py", two_domains, out, "--work", str(work))
    small, large = facts["rows"]
    assert (small["size"], small["specialists"], small["adapters_loaded"]) == (1, 1, 1)
    assert (large["size"], large["specialists"], large["adapters_loaded"]) == (2, 2, 2)
    assert large["domains"] == ["sentiment", "spam"] and small["domains"] == ["sentiment"]
    assert small["examples"] == 4 and large["examples"] == 8  # 4 per benchmark in the union
    assert large["adapters_resident_mb"] > small["adapters_resident_mb"] > 0
    view = yaml.safe_load((work / "lib-1" / "registry.yaml").read_text())
    assert list(view["adapters"]) == ["sentiment-a"]
    assert (work / "lib-1" / "sentiment-a").resolve() == (two_domains / "sentiment-a").resolve()
    assert (work / "lib-1" / "router" / "embedding.npz").is_file()  # each view gets its own router
    for row in facts["rows"]:
        systems = row["systems"]
        cost = systems["oracle"]["score"] - systems["router"]["score"]
        assert abs(row["misrouting_cost"] - cost) < 1e-9 and 0 <= row["routing_accuracy"] <= 1
    assert "routing accuracy" in out.with_suffix(".md").read_text()


def test_the_procedural_skills_build_disjoint_splits_with_answers_recomputed_independently():
    sys.path.insert(0, str(SCRIPTS.parent / "data"))
    import reasoning_gym_tasks as tasks

    assert tasks._digits(int("124", 9), 13) == "7c" and tasks._factors(360) == [2, 2, 2, 3, 3, 5]
    assert tasks._isomorphic("egg", "add") and not tasks._isomorphic("foo", "bar")
    assert tasks._decimal_sum("4.4 + 1.2 - 7.8") == "-2.2"
    assert tasks._kept(5.0, {"filter_value": "3", "operation": "remove_smaller"})
    assert not tasks._kept(5.0, {"filter_value": "3", "operation": "keep_smaller"})
    assert len(tasks.TASKS) == 16
    import chain_sum_math

    splits = {"math": chain_sum_math.build(n_train=500)}
    for domain in tasks.TASKS:
        found, disagreed = tasks.rows(domain)
        assert disagreed <= len(found) // 100, domain  # the generator and the check agree on nearly every item
        train, benchmark = splits[domain] = tasks.build(domain)
        assert (len(train), len(benchmark)) == (500, 300), domain
        assert all(r["output"] and r["metric"] == "exact_match" for r in train + benchmark), domain
    every_benchmark = [r["input"] for _, benchmark in splits.values() for r in benchmark]
    for domain, (train, _) in splits.items():  # no training row reads like any domain's benchmark question
        assert not leaking_training_rows([r["input"] for r in train], every_benchmark), domain
