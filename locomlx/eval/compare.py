"""Does an enhancement pay for itself? Accuracy gain and latency cost of each one against plain greedy decoding.

For every adapter, on its own benchmark: the base model and the adapter greedy, then the
adapter with RE2, with self-consistency votes, as part of its domain's ensemble (when the
registry has two or more adapters in that domain), and any requested composition that
includes it. Scores carry 95% bootstrap intervals; each gain has a paired p-value against
the adapter's greedy answers; latency is generation time per question.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from locomlx.adapters.library import find_adapter
from locomlx.boost.ensemble import ensemble_members, load_members
from locomlx.engine.batching import DEFAULT_BATCH
from locomlx.engine.compose import parse_composition
from locomlx.engine.engine import Engine
from locomlx.errors import LocomlxError
from locomlx.eval.run import BenchmarkRun, InferenceConfig, run_benchmark
from locomlx.scoring.stats import paired_p_value


@dataclass
class CompareSettings:
    limit: int | None = 100
    max_tokens: int = 256
    batch_size: int = DEFAULT_BATCH
    votes: int = 5
    vote_temperature: float = 0.7
    seed: int = 0


@dataclass
class Row:
    adapter: str  # whose benchmark this row is on
    benchmark: str
    metric: str
    n_examples: int
    decoding: str  # e.g. "greedy", "RE2", "votes 5 (T=0.7)", "ensemble of 2", "composition a:0.5+b:0.5"
    model: str
    score: float
    ci95: tuple[float, float]
    gain: float | None  # score - the adapter's greedy score
    p_value: float | None  # paired, against the adapter's greedy answers
    latency_seconds: float  # generation time per question
    cost: float | None  # latency / the adapter's greedy latency


def compare_row(adapter: str, decoding: str, run: BenchmarkRun, greedy: BenchmarkRun | None) -> Row:
    """One run as a row: its score and, against `greedy` (the adapter's greedy run), gain, paired p and cost."""
    latency = run.generation_seconds / run.n_examples
    greedy_latency = greedy.generation_seconds / greedy.n_examples if greedy else 0.0
    paired = greedy is not None and run is not greedy
    return Row(adapter, run.benchmark, run.metric, run.n_examples, decoding, run.model, run.score,
               (run.ci.low, run.ci.high), run.score - greedy.score if paired else None,
               paired_p_value([e.score for e in run.examples], [e.score for e in greedy.examples]) if paired else None,
               latency, latency / greedy_latency if paired and greedy_latency else None)


def compare_enhancements(engine: Engine, library: Path, adapters: list[str],
                         settings: CompareSettings = CompareSettings(), compositions: list[str] = (),
                         on_progress: Callable[[str, int, int], None] | None = None) -> list[Row]:
    """One row per (adapter, decoding); see the module docstring for which rows."""
    for name in dict.fromkeys(adapters + [p for spec in compositions for p, _ in parse_composition(spec) or []]):
        if name not in engine.adapters:
            engine.load_adapter(find_adapter(name, library), name)
    greedy_config = InferenceConfig(max_tokens=settings.max_tokens, limit=settings.limit,
                                    batch_size=settings.batch_size, seed=settings.seed)
    rows = []
    for adapter in adapters:
        benchmark = library / adapter / "eval" / "benchmark.jsonl"
        if not benchmark.is_file():
            raise LocomlxError(f"{adapter} has no benchmark at {benchmark}; every compared adapter needs one.")

        def run(model, decoding, config=greedy_config):
            progress = (lambda done, total: on_progress(f"{adapter}: {decoding}", done, total)) if on_progress else None
            return run_benchmark(engine, benchmark, model, None, config, progress)

        greedy = run(adapter, "greedy")
        rows.append(compare_row(adapter, "base model, greedy", run(None, "base model, greedy"), None))
        rows.append(compare_row(adapter, "greedy", greedy, greedy))
        variants = [("RE2", replace(greedy_config, reread=True)),
                    (f"votes {settings.votes} (T={settings.vote_temperature:g})",
                     replace(greedy_config, votes=settings.votes, vote_temperature=settings.vote_temperature))]
        if _domain_size(library, adapter) > 1:
            members = load_members(engine, library, adapter)
            variants.append((f"ensemble of {len(members)}", replace(greedy_config, ensemble=members)))
        for decoding, config in variants:
            rows.append(compare_row(adapter, decoding, run(adapter, decoding, config), greedy))
        for spec in compositions:
            if adapter in dict(parse_composition(spec)):
                name = engine.compose(spec)
                rows.append(compare_row(adapter, f"composition {name}", run(name, f"composition {name}"), greedy))
    return rows


def _domain_size(library: Path, adapter: str) -> int:
    """Installed adapters registered in `adapter`'s domain (0 when it is not registered)."""
    try:
        return len(ensemble_members(library, adapter))
    except LocomlxError:
        return 0


def format_table(rows: list[Row]) -> str:
    """The comparison as a Markdown table, one line per row."""
    lines = ["| adapter | benchmark (metric, n) | decoding | score [95% CI] | gain vs greedy (p) "
             "| latency / question | cost |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        gain = f"{r.gain:+.3f} (p = {r.p_value:.2g})" if r.gain is not None else ""
        cost = f"{r.cost:.1f}x" if r.cost is not None else ""
        benchmark = Path(r.benchmark).parent.parent.name
        lines.append(f"| {r.adapter} | {benchmark} ({r.metric}, {r.n_examples}) | {r.decoding} "
                     f"| {r.score:.3f} [{r.ci95[0]:.3f}, {r.ci95[1]:.3f}] | {gain} "
                     f"| {r.latency_seconds * 1000:.0f} ms | {cost} |")
    return "\n".join(lines)
