"""LiveBatch and the server's scheduler on the tiny model: rows that join a running batch, leave it early or
are sampled with their own seeds answer exactly as they would alone."""

from locomlx.engine.engine import Engine
from locomlx.engine.live import LiveBatch, greedy, row_sampler
from locomlx.prompt import example_messages, render_prompt
from locomlx.serve.protocol import ApiError, parse_request
from locomlx.serve.scheduler import Failed, Finished, Routed, Scheduler, Text, Work
from locomlx.session import AdapterChooser

import pytest

from tests import tiny


@pytest.fixture(scope="module")
def library(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("library")
    tiny.make_adapter(root / "alpha", tiny_model, rank=4, seed=11)
    tiny.make_adapter(root / "beta", tiny_model, rank=8, scale=1.0, seed=12, keys=("self_attn.k_proj", "mlp.down_proj"))
    return root


@pytest.fixture(scope="module")
def engine(tiny_model, library):
    engine = Engine.load(str(tiny_model), "float32")
    for name in ("alpha", "beta"):
        engine.load_adapter(library / name)
    return engine


def _prompts(engine, n):
    return [render_prompt(engine.tokenizer, example_messages(r["instruction"], r["input"]))
            for r in tiny.sentiment_examples(n, 5)]


def _drain(live):
    out = {}
    while live.rows:
        for step in live.step():
            if step.finished != "stop":
                out.setdefault(step.uid, []).append(step.token)
    return out


def test_rows_joining_a_running_batch_answer_as_they_would_alone(engine):
    prompts = _prompts(engine, 5)
    adapters = ["alpha", None, "beta", "alpha:0.7+beta:0.3", "alpha"]
    engine.compose("alpha:0.7+beta:0.3")
    expected = []
    for prompt, adapter in zip(prompts, adapters):
        live = LiveBatch(engine)
        uid = live.add(prompt, adapter, max_tokens=12)
        expected.append(_drain(live).get(uid, []))
        live.close()
    live = LiveBatch(engine, max_rows=3)
    uids = [live.add(prompts[0], adapters[0], 12), live.add(prompts[1], adapters[1], 12)]
    got: dict[int, list[int]] = {}
    for _ in range(3):  # two rows decode a few steps, then three more join mid-way
        for step in live.step():
            if step.finished != "stop":
                got.setdefault(step.uid, []).append(step.token)
    uids += [live.add(p, a, 12) for p, a in zip(prompts[2:], adapters[2:])]
    for uid, tokens in _drain(live).items():
        got.setdefault(uid, []).extend(tokens)
    assert min(len(tokens) for tokens in expected[:2]) > 3  # the first two were still decoding when the rest joined
    assert [got.get(uid, []) for uid in uids] == expected
    assert engine.selection.mix is None


def test_a_removed_row_leaves_and_the_others_go_on(engine):
    prompts = _prompts(engine, 2)
    live = LiveBatch(engine)
    keep, drop = live.add(prompts[0], "alpha", 10), live.add(prompts[1], "beta", 10)
    live.step()
    live.remove(drop)
    rest = _drain(live)
    assert drop not in rest and drop not in live.rows and len(rest[keep]) >= 1


def test_a_seeded_row_samples_the_same_whatever_rows_are_beside_it(engine):
    prompts = _prompts(engine, 3)
    runs = []
    for company in ([], prompts[1:]):
        live = LiveBatch(engine)
        uid = live.add(prompts[0], "alpha", 10, row_sampler(1.0, 0.9, seed=7))
        for p in company:
            live.add(p, "beta", 10, row_sampler(1.0, 1.0, seed=3))
        runs.append(_drain(live)[uid])
    assert runs[0] == runs[1]
    assert row_sampler(0.0) is greedy


def _run(scheduler, request, prompt):
    events = []
    scheduler.submit(Work(request, prompt, events.append))
    scheduler.run(until=lambda: any(isinstance(e, Failed) for e in events)
                  or sum(isinstance(e, Finished) for e in events) == request.n)
    return events


def test_scheduler_routes_streams_stops_and_refuses_a_full_queue(engine, library):
    scheduler = Scheduler(AdapterChooser(engine, library), max_batch=2, max_queue=0)
    prompt = _prompts(engine, 1)[0]
    request = parse_request({"model": "alpha", "messages": [{"role": "user", "content": "x"}],
                             "max_tokens": 12, "n": 2}, chat=True)
    events = _run(scheduler, request, prompt)
    assert isinstance(events[0], Routed) and events[0].answerer.adapter == "alpha"
    texts = ["".join(e.text for e in events if isinstance(e, Text) and e.index == i) for i in (0, 1)]
    assert texts[0] == texts[1] and texts[0]  # greedy: both choices alike
    cut = texts[0][len(texts[0]) // 2:][:2]
    request.stop, request.n = [cut], 1
    stopped = "".join(e.text for e in _run(scheduler, request, prompt) if isinstance(e, Text))
    assert stopped == texts[0][:texts[0].find(cut)]
    slow = parse_request({"model": "beta", "messages": [{"role": "user", "content": "x"}], "max_tokens": 400},
                         chat=True)
    works = [Work(slow, prompt, lambda e: None) for _ in range(2)]
    for work in works:
        scheduler.submit(work)
    with pytest.raises(ApiError) as refused:
        scheduler.submit(Work(slow, prompt, lambda e: None))
    assert refused.value.status == 429
    steps = scheduler.stats.steps
    scheduler.run(until=lambda: scheduler.stats.steps >= steps + 3)  # both decode a few tokens
    assert scheduler.stats.decoding == 2
    for work in works:
        scheduler.cancel(work)  # the clients go away
    scheduler.run(until=lambda: scheduler.stats.in_flight == 0)
    assert scheduler.stats.decoding == 0 and scheduler.stats.failures == []
