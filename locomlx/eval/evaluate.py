"""`locomlx eval ADAPTER`: adapter vs base in-domain, then out-of-domain, with significance and a verdict.

Acceptance (the contributing rules): a significant in-domain gain (paired test,
p < 0.05) and no other benchmark more than 5 points below the base model.
Writes `eval/results.json` (validated), `eval/base_results.json`,
`eval/ood_results.json` and `eval/outputs.jsonl` (one line per answer).
A run with inference enhancements (RE2, votes, ensemble) writes the same files
to `eval/enhanced/<enhancements>/` instead: the registry records the adapter's
plain greedy results.json, which such a run must not overwrite.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Callable

from locomlx._version import __version__
from locomlx.atomic import write_json_atomic, write_text_atomic
from locomlx.boost.ensemble import load_members
from locomlx.data.checks import library_benchmarks
from locomlx.engine.engine import Engine
from locomlx.errors import LocomlxError
from locomlx.eval.run import BenchmarkRun, InferenceConfig, run_benchmark
from locomlx.provenance import hardware
from locomlx.scoring.bar import MAX_OOD_DEGRADATION, SIGNIFICANCE, is_significant, within_ood_bar
from locomlx.scoring.results import read_results, validate_results
from locomlx.scoring.stats import paired_p_value

import yaml


def quantization(engine: Engine) -> str:
    """The base weights as stored and as computed, e.g. "4-bit (computed in float32)"."""
    quantized = engine.base.config.get("quantization")
    return (f"{quantized['bits']}-bit" if quantized else "none") + f" (computed in {engine.base.compute_dtype})"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def evaluate_base(base_model: str | None, benchmark: str | Path, metric: str | None = None,
                  inference: InferenceConfig = InferenceConfig(),
                  on_progress: Callable[[int, int], None] | None = None) -> dict:
    """The base model alone on a benchmark: its run (every answer and score) with the contributing guide's
    fields (`base_model`, `quantization`, `base_model_score`, `timestamp`; `adapter` is null)."""
    engine = Engine.load(base_model)
    run = run_benchmark(engine, benchmark, None, metric, inference, on_progress)
    return {"adapter": None, "base_model": engine.base.resolved.reference, "quantization": quantization(engine),
            "base_model_score": run.score, **run.to_dict(), "hardware": hardware(), "locomlx_version": __version__,
            "timestamp": _now()}


@dataclass
class Evaluation:
    adapter: BenchmarkRun
    base: BenchmarkRun
    ood: list[tuple[BenchmarkRun, BenchmarkRun]]
    results: dict
    written: list[Path]  # every file this evaluation wrote
    adapter_dir: Path
    out_of_domain: bool = False  # the benchmark is another domain's: `results` is an out-of-domain record

    @property
    def passed(self) -> bool:
        return self.results["within_bar"] if self.out_of_domain else self.results["passed"]


def _ood_entry(adapter_run: BenchmarkRun, base_run: BenchmarkRun) -> dict:
    return {"benchmark": adapter_run.benchmark, "benchmark_sha256": adapter_run.benchmark_sha256,
            "metric": adapter_run.metric, "n_examples": adapter_run.n_examples,
            "adapter_score": adapter_run.score, "base_model_score": base_run.score,
            "degradation": base_run.score - adapter_run.score}


def _is_own(adapter_dir: Path, benchmark: Path) -> bool:
    """Whether `benchmark` is the adapter's own (its eval/benchmark.jsonl, or a file with the same content)."""
    own = adapter_dir / "eval" / "benchmark.jsonl"
    return not own.is_file() or own.resolve() == benchmark.resolve() or own.read_bytes() == benchmark.read_bytes()


def ood_benchmarks(library: Path, own: Path) -> list[Path]:
    """The library's benchmarks an adapter whose benchmark is `own` is checked on out of domain: every other one,
    a copy of one already listed (or of `own`) once."""
    seen = {own.read_bytes()}
    found = []
    for other in library_benchmarks(library):
        if other.read_bytes() not in seen:
            seen.add(other.read_bytes())
            found.append(other)
    return found


def evaluate_adapter(adapter_dir: str | Path, library: Path, base_model: str | None = None,
                     benchmark: str | Path | None = None, metric: str | None = None,
                     inference: InferenceConfig = InferenceConfig(), ood: bool = True,
                     on_progress: Callable[[str, int, int], None] | None = None, ensemble: bool = False,
                     ood_limit: int | None = None, output: str | Path | None = None) -> Evaluation:
    """Adapter vs base; with `ensemble`, the adapter's answers are the vote of every registered adapter of its
    domain (the base answers alone). `inference` applies to both: RE2 and votes are measured on each.

    On the adapter's own benchmark this is the full evaluation (in domain, then every other benchmark of the
    library). On another domain's benchmark it is one out-of-domain check: how much the adapter loses there
    against the base model. With `output`, the record is written there and nowhere else; without it, the
    full evaluation writes eval/{results,base_results,ood_results}.json and outputs.jsonl (eval/enhanced/<tag>/
    with enhancements) and an out-of-domain check writes eval/ood/<benchmark's adapter>.json."""
    started = time.perf_counter()
    adapter_dir = Path(adapter_dir)
    base_model = _adapter_base_model(adapter_dir, base_model)
    benchmark = Path(benchmark or adapter_dir / "eval" / "benchmark.jsonl")
    if not benchmark.is_file():
        raise LocomlxError(f"No benchmark at {benchmark}; pass --benchmark FILE or train with --benchmark.")
    out_of_domain = not _is_own(adapter_dir, benchmark)
    engine, name = _engine_with(adapter_dir, base_model)
    if ensemble:
        inference = replace(inference, ensemble=load_members(engine, library, name))
    base_inference = replace(inference, ensemble=[])
    progress = partial(_labelled, on_progress)

    adapter_run = run_benchmark(engine, benchmark, name, metric, inference, progress(f"{name} on {benchmark.name}"))
    base_run = run_benchmark(engine, benchmark, None, metric, base_inference, progress(f"base on {benchmark.name}"))
    p_value = paired_p_value([e.score for e in adapter_run.examples], [e.score for e in base_run.examples])
    common = {
        "adapter": name,
        "base_model": engine.base.resolved.reference,
        "quantization": quantization(engine),
        "benchmark": str(benchmark),
        "benchmark_sha256": adapter_run.benchmark_sha256,
        "n_examples": adapter_run.n_examples,
        "metric": adapter_run.metric,
        "adapter_score": adapter_run.score,
        "base_model_score": base_run.score,
    }
    if out_of_domain:
        degradation = base_run.score - adapter_run.score
        record = {"kind": "out-of-domain", **common, "degradation": degradation,
                  "within_bar": within_ood_bar(degradation),
                  "adapter_ci95": [adapter_run.ci.low, adapter_run.ci.high],
                  "base_model_ci95": [base_run.ci.low, base_run.ci.high], "p_value": p_value,
                  "inference": adapter_run.inference.__dict__, "hardware": hardware(),
                  "locomlx_version": __version__, "duration_seconds": time.perf_counter() - started,
                  "timestamp": _now()}
        target = Path(output) if output else adapter_dir / "eval" / "ood" / f"{_label(benchmark)}.json"
        write_json_atomic(target, record)
        return Evaluation(adapter_run, base_run, [], record, [target], adapter_dir, True)

    ood_inference, ood_base_inference = (replace(i, limit=ood_limit or i.limit) for i in (inference, base_inference))
    ood_runs = []
    if ood:
        for other in ood_benchmarks(library, benchmark):
            label = _label(other)
            ood_runs.append((run_benchmark(engine, other, name, None, ood_inference, progress(f"{name} on {label}")),
                             run_benchmark(engine, other, None, None, ood_base_inference,
                                           progress(f"base on {label}"))))

    improvement = adapter_run.score - base_run.score
    ood_entries = [_ood_entry(a, b) for a, b in ood_runs]
    degradation = max([0.0] + [e["degradation"] for e in ood_entries])
    significant = is_significant(p_value, improvement)
    results = {
        **common,
        "improvement": improvement,
        "relative_improvement": improvement / base_run.score if base_run.score else None,
        "adapter_ci95": [adapter_run.ci.low, adapter_run.ci.high],
        "base_model_ci95": [base_run.ci.low, base_run.ci.high],
        "p_value": p_value,
        "significant": significant,
        "ood": ood_entries,
        "ood_degradation": degradation,
        "passed": significant and within_ood_bar(degradation),
        "judge_sd": statistics.pstdev(adapter_run.judge_pass_scores) if adapter_run.judge_pass_scores else None,
        "inference": {**adapter_run.inference.__dict__, "ood_limit": ood_limit},
        "hardware": hardware(),
        "locomlx_version": __version__,
        "duration_seconds": time.perf_counter() - started,
        "timestamp": _now(),
    }
    problems = validate_results(results)
    if problems:  # a bug in this module, never the user's input
        raise RuntimeError("\n".join(problems))
    if output:
        write_json_atomic(Path(output), results)
        return Evaluation(adapter_run, base_run, ood_runs, results, [Path(output)], adapter_dir)
    out = adapter_dir / "eval" / ("enhanced/" + inference.enhancements if inference.enhancements else "")
    write_json_atomic(out / "results.json", results)
    write_json_atomic(out / "base_results.json", base_run.to_dict())
    write_json_atomic(out / "ood_results.json", [{"adapter": a.to_dict(), "base": b.to_dict()} for a, b in ood_runs])
    lines = "".join(json.dumps({"model": run.model, "line": e.line, "reference": e.reference, "output": e.output,
                                "extracted": e.extracted, "score": e.score}
                               | ({"vote": e.vote} if e.vote else {})) + "\n"
                    for run in (adapter_run, base_run) for e in run.examples)
    write_text_atomic(out / "outputs.jsonl", lines)
    written = [out / name for name in ("results.json", "base_results.json", "ood_results.json", "outputs.jsonl")]
    return Evaluation(adapter_run, base_run, ood_runs, results, written, adapter_dir)


def add_ood_scores(adapter_dir: Path, library: Path, benchmarks: list[Path], base_model: str | None = None,
                   on_progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Score an evaluated adapter out of domain on more `benchmarks` (a domain added after its evaluation) and add
    them to its eval/results.json, with the settings that file records; its other scores stay as they are."""
    adapter_dir = Path(adapter_dir)
    path = adapter_dir / "eval" / "results.json"
    results = read_results(path)
    recorded = results["inference"]
    inference = InferenceConfig(max_tokens=recorded.get("max_tokens", 256),
                                limit=recorded.get("ood_limit") or recorded.get("limit"),
                                batch_size=recorded.get("batch_size", InferenceConfig().batch_size),
                                reread=recorded.get("reread", False), votes=recorded.get("votes", 1),
                                vote_temperature=recorded.get("vote_temperature", 0.7))
    engine, name = _engine_with(adapter_dir, _adapter_base_model(adapter_dir, base_model))
    for benchmark in benchmarks:
        label = _label(benchmark)
        adapter_run = run_benchmark(engine, benchmark, name, None, inference,
                                    _labelled(on_progress, f"{name} on {label}"))
        base_run = run_benchmark(engine, benchmark, None, None, inference, _labelled(on_progress, f"base on {label}"))
        results["ood"].append(_ood_entry(adapter_run, base_run))
    results["ood_degradation"] = max([0.0] + [e["degradation"] for e in results["ood"]])
    results["passed"] = results["significant"] and within_ood_bar(results["ood_degradation"])
    results["timestamp"] = _now()
    problems = validate_results(results)
    if problems:  # a bug in this module, never the user's input
        raise RuntimeError("\n".join(problems))
    write_json_atomic(path, results)
    return results


def _adapter_base_model(adapter_dir: Path, base_model: str | None) -> str | None:
    """`base_model`, else the one the adapter's config records; an error when `adapter_dir` is no adapter."""
    config_path = adapter_dir / "adapter_config.json"
    if not config_path.is_file():
        raise LocomlxError(f"{adapter_dir} is not an adapter directory (no adapter_config.json).")
    return base_model or json.loads(config_path.read_text()).get("base_model")


def _engine_with(adapter_dir: Path, base_model: str | None) -> tuple[Engine, str]:
    """The base model loaded with the adapter resident under its folder's name."""
    engine = Engine.load(base_model)
    engine.load_adapter(adapter_dir, adapter_dir.name)
    return engine, adapter_dir.name


def _labelled(on_progress: Callable[[str, int, int], None] | None, label: str) -> Callable[[int, int], None] | None:
    return (lambda done, total: on_progress(label, done, total)) if on_progress else None


def _label(benchmark: Path) -> str:
    """A benchmark's short name: its adapter's folder for ADAPTER/eval/benchmark.jsonl, else the file's stem."""
    return benchmark.parent.parent.name if benchmark.name == "benchmark.jsonl" else benchmark.stem


def _significance(p_value: float, improvement: float) -> str:
    if is_significant(p_value, improvement):
        return "a significant gain"
    if p_value < SIGNIFICANCE and improvement < 0:
        return "significantly worse than the base model"
    return "not significant"


def replay_fix(evaluation: Evaluation) -> str | None:
    """The command that retrains the adapter with replay of the benchmarks it lost on (None when it lost on none).

    Replay mixes other tasks' questions, answered by the base model, into training, so the adapter keeps the
    base's behaviour outside its task (locomlx/train/replay.py); the shipped adapters pass the bar that way."""
    r = evaluation.results
    lost = [Path(r["benchmark"])] if evaluation.out_of_domain and not r["within_bar"] else \
        [Path(e["benchmark"]) for e in r.get("ood", []) if not within_ood_bar(e["degradation"])]
    if not lost:
        return None
    stored = evaluation.adapter_dir / "training" / "train_config.yaml"
    config = (yaml.safe_load(stored.read_text()) or {}).get("config", {}) if stored.is_file() else {}
    dataset = config.get("dataset") or str(evaluation.adapter_dir / "training" / "dataset.jsonl")
    replays = []
    for benchmark in lost:
        data = benchmark.parent.parent / "training" / "dataset.jsonl"
        replays.append(str(data) if data.is_file() else str(benchmark))
    own = evaluation.adapter_dir / "eval" / "benchmark.jsonl"
    new = evaluation.adapter_dir.with_name(evaluation.adapter_dir.name + "-replay")
    return (f"python scripts/fine_tune.py --dataset {dataset} --benchmark {own} --output {new} "
            + " ".join(f"--replay {path}" for path in replays))


def format_report(evaluation: Evaluation) -> str:
    r = evaluation.results
    if evaluation.out_of_domain:
        lines = [
            f"{r['adapter']} out of its domain, on {r['benchmark']} ({r['n_examples']} examples, {r['metric']})",
            f"  adapter {r['adapter_score']:.3f}  95% CI [{r['adapter_ci95'][0]:.3f}, {r['adapter_ci95'][1]:.3f}]",
            f"  base    {r['base_model_score']:.3f}  95% CI [{r['base_model_ci95'][0]:.3f}, "
            f"{r['base_model_ci95'][1]:.3f}]",
            f"  degradation (base - adapter) {r['degradation']:+.3f}, at most {MAX_OOD_DEGRADATION} allowed; "
            f"paired p = {r['p_value']:.2g}",
            ("PASS: within the out-of-domain bar" if r["within_bar"] else
             f"FAIL: the adapter loses {r['degradation']:.3f} here (> {MAX_OOD_DEGRADATION})"),
        ]
    else:
        lines = _full_report(evaluation)
    fix = replay_fix(evaluation)
    if fix:
        lines.append("  Fix: retrain with replay of the benchmarks it lost on (the base model answers their "
                     "questions, so the adapter keeps its behaviour there):\n    " + fix)
    lines.append("  Wrote " + ", ".join(str(p) for p in evaluation.written))
    return "\n".join(lines)


def _full_report(evaluation: Evaluation) -> list[str]:
    r = evaluation.results
    rel = f" ({r['relative_improvement']:+.0%} relative)" if r["relative_improvement"] is not None else ""
    lines = [
        f"{r['adapter']} on {r['benchmark']} ({r['n_examples']} examples, {r['metric']})",
        f"  adapter {r['adapter_score']:.3f}  95% CI [{r['adapter_ci95'][0]:.3f}, {r['adapter_ci95'][1]:.3f}]"
        + (f"  (judge sd over passes {r['judge_sd']:.3f})" if r["judge_sd"] is not None else ""),
        f"  base    {r['base_model_score']:.3f}  95% CI [{r['base_model_ci95'][0]:.3f}, {r['base_model_ci95'][1]:.3f}]",
        f"  improvement {r['improvement']:+.3f}{rel}, paired p = {r['p_value']:.2g} "
        f"({_significance(r['p_value'], r['improvement'])})",
    ]
    if r["ood"]:
        lines.append(f"  out of domain (base - adapter; at most {MAX_OOD_DEGRADATION} allowed):")
        for e in r["ood"]:
            lines.append(f"    {e['benchmark']}: adapter {e['adapter_score']:.3f}, base {e['base_model_score']:.3f}, "
                         f"degradation {e['degradation']:+.3f}")
    else:
        lines.append("  out of domain: no other benchmarks in the adapter library")
    if r["inference"].get("decoding", "greedy") != "greedy" or r["inference"].get("reread"):
        reread = ", RE2 re-reading" if r["inference"].get("reread") else ""
        lines.append(f"  inference: {r['inference']['decoding']}{reread}")
    lines.append(f"{'PASS' if r['passed'] else 'FAIL'}: " + (
        "significant in-domain gain, out-of-domain within 5 points" if r["passed"] else
        "; ".join(filter(None, [
            None if r["significant"] else "no significant in-domain gain",
            None if within_ood_bar(r["ood_degradation"]) else
            f"out-of-domain degradation {r['ood_degradation']:.3f} > {MAX_OOD_DEGRADATION}",
        ]))))
    return lines
