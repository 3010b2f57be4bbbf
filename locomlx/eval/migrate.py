"""Next year's base model (PL-04): the library's specialists retrained on a candidate base and compared.

Every active adapter is trained again on the new base from what it keeps in its own folder: its data
(`training/dataset.jsonl`), its recipe (`training/train_config.yaml`: rank, alpha, learning rate, epochs,
batch, sequence length, seed) and its replay questions (`training/replay.jsonl`, whose answers the *new* base
regenerates: replay teaches "answer like the base" outside the domain, and the base has changed). The new
library gets a registry for the new base; each adapter is installed there, evaluated on the same benchmark
with the same inference settings as its old results (in domain and on every other benchmark of the new
library), and promoted where it passes the bar. The report puts old and new side by side per domain,
with a paired test between the old and the new adapter on the same questions, which says which base
wins where; an ADR draft states the decision that follows from it for a person to accept or change.

Each step is skipped when its output exists, so an interrupted migration resumes where it stopped.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from locomlx.atomic import write_json_atomic, write_text_atomic
from locomlx.data.training_log import RUN_MARKER, student_part
from locomlx.errors import LocomlxError
from locomlx.eval.evaluate import evaluate_adapter, ood_benchmarks
from locomlx.eval.run import InferenceConfig
from locomlx.models.anatomy import block_linears
from locomlx.models.resolve import resolve_model
from locomlx.registry import active_adapters, load_registry
from locomlx.registry.install import AdapterInfo, install_adapter
from locomlx.registry.promote import promote, promotion_blockers
from locomlx.registry.refresh import init_registry, refresh_registry
from locomlx.registry.schema import AdapterEntry
from locomlx.registry.store import edit_registry
from locomlx.scoring.bar import is_significant
from locomlx.scoring.stats import paired_p_value
from locomlx.train.config import load_config, recorded_recipe
from locomlx.train.replay import replay_file_from
from locomlx.train.trainer import partial_dir, train

REPORT = "MIGRATION.md"
STATE = "migration.json"
REPLAY_DIR = ".replay-questions"  # in the new library: each adapter's replay questions, the new run's input


@dataclass
class DomainMigration:
    """One active adapter of the old library and what became of it on the new base."""

    domain: str
    adapter: str
    metric: str
    n_examples: int
    old_base_score: float
    old_adapter_score: float
    new_base_score: float | None = None
    new_adapter_score: float | None = None
    new_p_value: float | None = None  # new adapter vs new base
    new_significant: bool | None = None
    new_ood_degradation: float | None = None
    promoted: bool = False
    blockers: str = ""  # why it was not promoted
    old_vs_new_p_value: float | None = None  # new adapter vs old adapter, paired on the same questions
    train_seconds: float | None = None
    train_tokens_per_second: float | None = None
    train_peak_memory_mb: float | None = None  # MLX's peak allocation while training
    old_base_tokens_per_second: float | None = None  # generation speed of each base on this benchmark
    new_base_tokens_per_second: float | None = None
    targets_note: str = ""

    @property
    def gain(self) -> float | None:
        return None if self.new_adapter_score is None else self.new_adapter_score - self.new_base_score

    @property
    def winner(self) -> str:
        """Which base's adapter answers this domain better: 'new', 'old', or 'tie' (no significant difference)."""
        if self.new_adapter_score is None or self.old_vs_new_p_value is None:
            return "pending"
        difference = self.new_adapter_score - self.old_adapter_score
        if not is_significant(self.old_vs_new_p_value, abs(difference)):
            return "tie"
        return "new" if difference > 0 else "old"


@dataclass
class MigrationSettings:
    limit: int | None = None  # benchmark examples (a smoke run); None = the whole benchmark, as before
    ood_limit: int | None = None  # None = what the old evaluation used


def _block_linears(base_model: str) -> set[str]:
    """The new base's default LoRA targets (models/anatomy.py), from its architecture with the weights unread."""
    from mlx_lm.utils import load_model

    model, _ = load_model(resolve_model(base_model).path, lazy=True)
    return set(block_linears(model))


def _quantization(base_model: str) -> str:
    """The new base's weights as stored, for its registry (e.g. "4-bit", or "none" for float weights)."""
    config = json.loads((resolve_model(base_model).path / "config.json").read_text())
    bits = (config.get("quantization") or {}).get("bits")
    return f"{bits}-bit" if bits else "none"


# The sections of a run record that older logs hold inline, without RUN_MARKER above them.
_RUN_SECTIONS = ("Data", "Base model", "Hyperparameters", "Loss", "Run", "Training run")


def student_log(log: str) -> str:
    """What the student wrote in a TRAINING_LOG.md (sources, review, licences), without the old run's record:
    the new run writes its own below it."""
    if RUN_MARKER in log:
        return student_part(log) + "\n"
    kept, keep = [], True
    for line in log.splitlines():
        if line.startswith("## "):
            keep = line[3:].strip() not in _RUN_SECTIONS
        if keep and not line.startswith("Generated by `locomlx train`"):
            kept.append(line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).rstrip() + "\n"


def _prepare_folder(source: Path, target: Path) -> None:
    """The contributing guide's in-place layout in the new library: data, benchmark and the student's log."""
    for part in ("training/dataset.jsonl", "eval/benchmark.jsonl"):
        if (source / part).is_file() and not (target / part).is_file():
            (target / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / part, target / part)
    log = source / "training" / "TRAINING_LOG.md"
    if log.is_file() and not (target / "training" / "TRAINING_LOG.md").is_file():
        write_text_atomic(target / "training" / "TRAINING_LOG.md", student_log(log.read_text(encoding="utf-8")))
    if not (target / "training" / "dataset.jsonl").is_file():
        raise LocomlxError(f"{source} has no training/dataset.jsonl: its training data is not stored with it, so "
                           "it cannot be retrained.")


def _retrain(source: Path, target: Path, new_base: str, linears: set[str], row: DomainMigration,
             on_message: Callable[[str], None], on_progress) -> None:
    import mlx.core as mx

    recipe = recorded_recipe(source)
    _prepare_folder(source, target)
    targets = list(recipe.get("target_modules") or [])
    if targets and not set(targets) <= linears:
        row.targets_note = (f"old targets {', '.join(sorted(set(targets) - linears))} are not in the new base; "
                            "trained on every linear layer of its blocks")
        targets = []
    replay, replay_rows = replay_file_from(source, target.parent / REPLAY_DIR / f"{target.name}.jsonl")
    overrides = {**recipe, "dataset": str(target / "training" / "dataset.jsonl"), "output": str(target),
                 "base_model": new_base, "benchmark": str(target / "eval" / "benchmark.jsonl"),
                 "target_modules": targets, "adapters_dir": str(target.parent),
                 "replay": [str(replay)] if replay_rows else [], "replay_per_file": max(replay_rows, 1)}
    config = load_config(None, overrides)
    mx.reset_peak_memory()
    started = time.perf_counter()
    result = train(config, resume=partial_dir(target).is_dir(), on_progress=on_progress, on_message=on_message)
    row.train_seconds = time.perf_counter() - started
    state = result.state
    row.train_tokens_per_second = state.trained_tokens / state.train_seconds if state.train_seconds else None
    row.train_peak_memory_mb = mx.get_peak_memory() / 2**20


def _install(library: Path, name: str, entry: AdapterEntry) -> None:
    if name in load_registry(library).adapters:
        return
    install_adapter(str(library / name), library, AdapterInfo(
        entry.domain, name=name, version=entry.version, semester=entry.semester, description=entry.description,
        authors=list(entry.authors), tags=list(entry.tags), keywords=list(entry.router.keywords),
        metric=entry.metric))


def _answers(folder: Path, model: str) -> dict[int, float]:
    """Benchmark line -> score of `model` ('base' or the adapter) in an evaluation's outputs.jsonl."""
    path = folder / "eval" / "outputs.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()] \
        if path.is_file() else []
    return {r["line"]: r["score"] for r in rows if r["model"] == model}


def _old_vs_new(old: Path, new: Path, name: str) -> float | None:
    """Paired p-value of the new adapter against the old one, over the questions both answered."""
    before, after = _answers(old, name), _answers(new, name)
    common = sorted(set(before) & set(after))
    return paired_p_value([after[i] for i in common], [before[i] for i in common]) if common else None


def _evaluated(folder: Path, settings: MigrationSettings, inference: InferenceConfig) -> dict | None:
    """The new results.json if it was made with these settings, else None (evaluate again)."""
    path = folder / "eval" / "results.json"
    if not path.is_file():
        return None
    results = json.loads(path.read_text())
    own = folder / "eval" / "benchmark.jsonl"
    same = (results["inference"].get("limit") == settings.limit
            and results["inference"].get("max_tokens") == inference.max_tokens
            # an adapter migrated before the others was checked against fewer benchmarks out of domain
            and len(results["ood"]) == len(ood_benchmarks(folder.parent, own)))
    return results if same else None


def _speed(folder: Path) -> float | None:
    path = folder / "eval" / "base_results.json"
    return json.loads(path.read_text()).get("generation_tokens_per_second") if path.is_file() else None


def migrate_library(library: Path, new_base: str, output: Path, settings: MigrationSettings = MigrationSettings(),
                    only: list[str] | None = None, on_message: Callable[[str], None] = lambda m: None,
                    on_progress=None, on_eval_progress=None) -> list[DomainMigration]:
    """Retrain, evaluate and promote every active adapter of `library` (or those named in `only`) on
    `new_base` into the library `output`; write its report. Returns one row per domain."""
    library, output = Path(library), Path(output)
    old = load_registry(library)
    chosen = {domain: name for domain, name in sorted(active_adapters(old).items()) if not only or name in only}
    unknown = sorted(set(only or []) - set(chosen.values()))
    if unknown:
        raise LocomlxError(f"{', '.join(unknown)}: not an active adapter of {library}; migrate retrains the active "
                           f"ones: {', '.join(sorted(active_adapters(old).values()))}.")
    if not chosen:
        raise LocomlxError(f"{library} has no active adapters to migrate; promote some first (locomlx promote).")
    if output.resolve() == library.resolve():
        raise LocomlxError("--output must be a new library folder, not the library being migrated.")
    if not (output / "registry.yaml").is_file():
        init_registry(output, new_base, _quantization(new_base))
    elif (recorded := load_registry(output).base_model) and recorded.id != new_base:
        raise LocomlxError(f"{output} is a library for base model '{recorded.id}', not '{new_base}'; choose "
                           "another --output.")
    state_path = output / STATE
    done = {r["adapter"]: r for r in json.loads(state_path.read_text())} if state_path.is_file() else {}
    # Adapters migrated by earlier runs (with --adapter) stay in the state and the report.
    earlier = [DomainMigration(**r) for name, r in done.items() if name not in chosen.values()]
    linears = None  # the new base's block linears, read once, and only if something is to be trained
    rows = []
    for domain, name in chosen.items():
        folder = library / old.adapters[name].path
        results = json.loads((folder / "eval" / "results.json").read_text())
        row = DomainMigration(domain, name, results["metric"], results["n_examples"], results["base_model_score"],
                              results["adapter_score"], old_base_tokens_per_second=_speed(folder))
        for key in ("train_seconds", "train_tokens_per_second", "train_peak_memory_mb", "targets_note"):
            setattr(row, key, done.get(name, {}).get(key, getattr(row, key)))
        if not (output / name / "adapter_config.json").is_file():
            on_message(f"{name} ({domain}): training on {new_base} with its stored data and recipe")
            linears = linears if linears is not None else _block_linears(new_base)
            _retrain(folder, output / name, new_base, linears, row, on_message, on_progress)
        rows.append(row)
        _save_state(state_path, rows + earlier)
    for row in rows:
        _install(output, row.adapter, old.adapters[row.adapter])
    for row in rows:
        folder = library / old.adapters[row.adapter].path
        old_inference = json.loads((folder / "eval" / "results.json").read_text())["inference"]
        inference = InferenceConfig(max_tokens=old_inference["max_tokens"], limit=settings.limit,
                                    batch_size=old_inference.get("batch_size", InferenceConfig.batch_size))
        results = _evaluated(output / row.adapter, settings, inference)
        if results is None:
            on_message(f"{row.adapter}: evaluating on {new_base} (in domain, then out of domain)")
            ood_limit = settings.ood_limit or old_inference.get("ood_limit")
            results = evaluate_adapter(output / row.adapter, output, new_base, inference=inference,
                                       ood_limit=ood_limit, on_progress=on_eval_progress).results
        refresh_registry(output, [row.adapter])
        row.new_base_score, row.new_adapter_score = results["base_model_score"], results["adapter_score"]
        row.new_p_value, row.new_significant = results["p_value"], results["significant"]
        row.new_ood_degradation = results["ood_degradation"]
        row.new_base_tokens_per_second = _speed(output / row.adapter)
        row.old_vs_new_p_value = _old_vs_new(folder, output / row.adapter, row.adapter)
        entry = load_registry(output).adapters[row.adapter]
        blockers = promotion_blockers(entry)
        row.blockers = "; ".join(blockers)
        if not blockers and not entry.active:
            promote(output, row.adapter)
        elif blockers and entry.active:  # promoted by an earlier run, before a later domain's benchmark checked it
            with edit_registry(output) as registry:
                registry.entry(row.adapter).active = False
        row.promoted = not blockers
        _save_state(state_path, rows + earlier)
    every = sorted(rows + earlier, key=lambda r: (r.domain, r.adapter))
    old_base = old.base_model.id if old.base_model else "the old base"
    write_text_atomic(output / REPORT, migration_report(every, old_base, new_base, library, output, settings,
                                                        pending_adapters(library, every)))
    return every


def pending_adapters(library: Path, rows: list[DomainMigration]) -> list[str]:
    """Active adapters of `library` that no run has migrated yet."""
    return sorted(set(active_adapters(load_registry(library)).values()) - {r.adapter for r in rows})


def _save_state(path: Path, rows: list[DomainMigration]) -> None:
    write_json_atomic(path, [asdict(r) for r in rows])


def _score(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _number(value: float | None, digits: int = 0) -> str:
    return "" if value is None else f"{value:.{digits}f}"


SCORE_COLUMNS = ("domain", "adapter", "metric", "old base", "new base", "old adapter", "new adapter", "gain",
                 "p (gain)", "p (old vs new)", "winner", "promoted")
COST_COLUMNS = ("adapter", "training seconds (new base)", "training tokens/s", "MLX peak memory while training (MB)",
                "old base generation tok/s", "new base generation tok/s", "note")


def _header(columns: tuple[str, ...]) -> str:
    return f"| {' | '.join(columns)} |\n|{' --- |' * len(columns)}"


def migration_report(rows: list[DomainMigration], old_base: str, new_base: str, library: Path, output: Path,
                     settings: MigrationSettings, pending: list[str]) -> str:
    """The side-by-side report, Markdown."""
    table = "\n".join(
        f"| {r.domain} | {r.adapter} | {r.metric} | {_score(r.old_base_score)} | {_score(r.new_base_score)} | "
        f"{_score(r.old_adapter_score)} | {_score(r.new_adapter_score)} | "
        f"{'' if r.gain is None else f'{r.gain:+.3f}'} | {'' if r.new_p_value is None else f'{r.new_p_value:.3g}'} | "
        f"{'' if r.old_vs_new_p_value is None else f'{r.old_vs_new_p_value:.3g}'} | **{r.winner}** | "
        f"{'yes' if r.promoted else 'no: ' + r.blockers if r.new_adapter_score is not None else ''} |"
        for r in rows)
    costs = "\n".join(
        f"| {r.adapter} | {_number(r.train_seconds)} | {_number(r.train_tokens_per_second)} | "
        f"{_number(r.train_peak_memory_mb)} | {_number(r.old_base_tokens_per_second, 1)} | "
        f"{_number(r.new_base_tokens_per_second, 1)} | {r.targets_note} |"
        for r in rows)
    wins = {side: [r.domain for r in rows if r.winner == side] for side in ("new", "old", "tie")}
    unfinished = (f"\n**Not migrated yet**: {', '.join(pending)} ({len(rows)} of {len(rows) + len(pending)} active "
                  "adapters done); the same command continues with them.\n" if pending else "")
    smoke = (f"\n**Smoke run**: {settings.limit} benchmark examples per domain, not the whole benchmarks; "
             "the scores are not comparable with the old ones.\n" if settings.limit else "")
    return f"""# Migrating {library} from {old_base} to {new_base}

Written by `locomlx migrate --adapters-dir {library} --base-model {new_base} --output {output}`. Each active
adapter was retrained on {new_base} from its own `training/dataset.jsonl` and `train_config.yaml` (replay
answers regenerated by {new_base}) and evaluated on the same benchmark with the same settings as before.
{unfinished}{smoke}
## Scores

Gain: new adapter minus new base. p (gain): paired test of the new adapter against the new base. p (old vs
new): paired test of the new adapter against the old adapter on the same questions; the winner is the base
whose adapter scores significantly higher (tie: no significant difference).

{_header(SCORE_COLUMNS)}
{table}

New base wins: {', '.join(wins['new']) or 'none'}. Old base wins: {', '.join(wins['old']) or 'none'}.
No significant difference: {', '.join(wins['tie']) or 'none'}.

## Costs on this machine

{_header(COST_COLUMNS)}
{costs}
"""


def next_adr_number(adr_dir: Path) -> int:
    numbers = [int(m.group(1)) for p in adr_dir.glob("*.md") if (m := re.match(r"(\d{4})-", p.name))]
    return max(numbers, default=0) + 1


def adr_draft(rows: list[DomainMigration], old_base: str, new_base: str, report: Path,
              pending: list[str]) -> str:
    """An architecture decision record, proposed: the decision the numbers suggest, for a person to settle."""
    new_wins = [r.domain for r in rows if r.winner == "new"]
    old_wins = [r.domain for r in rows if r.winner == "old"]
    if len(new_wins) > len(old_wins):
        decision = f"Adopt {new_base} as the base model: its adapters win {', '.join(new_wins)}"
    elif old_wins:
        decision = f"Keep {old_base}: its adapters win {', '.join(old_wins)}"
    else:
        decision = f"Keep {old_base} for now: neither base's adapters are significantly better in any domain"
    lost = [r.domain for r in rows if r.new_adapter_score is not None and not r.promoted]
    if pending:
        decision += (f" (on {len(rows)} of {len(rows) + len(pending)} active adapters; not migrated yet: "
                     f"{', '.join(pending)}, so this is not yet a decision on the whole library)")
    return f"""# Base model for next year: {new_base} or {old_base}

- Status: proposed (a draft written by `locomlx migrate`; a maintainer accepts, edits or rejects it)
- Evidence: [{report.name}]({report.as_posix()})

## Context

Every active adapter of the library was retrained on {new_base} from its stored data and recipe and
evaluated on the same benchmarks. A base change invalidates every adapter at once, so it is decided on
the whole library's numbers, per domain, rather than on the base models' general scores.

## Decision

{decision}.

## Consequences

- Domains whose retrained adapter did not pass the bar on {new_base}, which would answer with the base
  model until a contributor improves them: {', '.join(lost) or 'none'}.
- Every contributor retrains on the chosen base; the library's registry records it, and chat on another
  base answers without the adapters and says so.
- Training time, memory and generation speed per adapter are in the report's cost table.
"""
