"""Command line of the router: `locomlx route` and `locomlx router train|eval`.

Parses arguments, calls locomlx.router and locomlx.eval.routing, prints.
"""

from __future__ import annotations

import json
from pathlib import Path

from locomlx.cli.options import adapters_dir_option, counter_progress, json_option, library_path, router_option

import click


def _setup(adapters_dir: str | None, base_model: str | None = None):
    from locomlx.engine.engine import Engine
    from locomlx.registry import load_registry

    folder = library_path(adapters_dir)
    registry = load_registry(folder)
    base = base_model or (registry.base_model.id if registry.base_model else None)
    return folder, registry, Engine.load(base)


def _progress(done: int, total: int) -> None:
    click.echo(f"\r  routing held-out queries: {done}/{total}".ljust(60), nl=done == total, err=True)


@click.command()
@click.argument("query")
@router_option
@adapters_dir_option
@json_option()
def route(query, router_name, adapters_dir, as_json):
    """Show which adapter the router picks for QUERY, with its confidence and every domain's score.

    \b
    Examples:
      locomlx route "Is this review positive or negative? A joyless, tedious film."
      locomlx route --router keyword --json "Is this e-mail spam? WIN A FREE CRUISE"
    """
    from locomlx.router.load import load_router

    library, registry, engine = _setup(adapters_dir)
    decision = load_router(router_name, engine, registry, library).route(query)
    if as_json:
        click.echo(json.dumps(decision.to_dict(), indent=2))
        return
    click.echo(decision.summary())
    for domain, score in sorted(decision.scores.items(), key=lambda kv: -kv[1]):
        click.echo(f"  {domain:20s} {score:.3f}")


@click.group()
def router():
    """Train and evaluate the router that picks a specialist per question (docs/routers.md)."""


@router.command("train")
@adapters_dir_option
@click.option("--per-domain", default=600, show_default=True, type=click.IntRange(10),
              help="Most training queries per domain (sampled from each adapter's training data).")
@click.option("--layers", default=8, show_default=True, type=click.IntRange(1),
              help="Base-model blocks run to embed a query (fewer = faster routing).")
@click.option("--seed", default=0, show_default=True, type=int)
@json_option()
def router_train(adapters_dir, per_domain, layers, seed, as_json):
    """Train the embedding router for the current registry; saves LIBRARY/router/embedding.npz.

    Uses every registered adapter's training data plus LIBRARY/router/general.jsonl (questions for
    the base model), holds out 20% to calibrate the confidence and pick the fallback threshold.
    Retrain whenever adapters are added, removed or promoted: a stale router refuses to run.
    """
    from locomlx.router.embedding import save_router, train_embedding_router

    library, registry, engine = _setup(adapters_dir)
    show = counter_progress()
    trained = train_embedding_router(engine, registry, library, per_domain, layers, seed=seed,
                                     on_progress=lambda m: click.echo(m, err=True),
                                     on_count=lambda done, total: show("embedded queries", done, total))
    path = save_router(trained, library)
    if as_json:
        click.echo(json.dumps(dict(trained.meta, path=str(path)), indent=2))
        return
    m = trained.meta
    click.echo(f"saved {path}: {len(trained.classes)} classes ({', '.join(trained.classes)}), "
               f"{m['train_queries']} training / {m['validation_queries']} validation queries, {m['seconds']:.1f} s")
    click.echo(f"validation accuracy {m['validation_accuracy']:.3f} · threshold {m['threshold']:.2f} · "
               f"temperature {m['temperature']:.2f} · ECE {m['ece_uncalibrated']:.3f} -> {m['ece']:.3f} (calibrated)")


@router.command("eval")
@router_option
@adapters_dir_option
@click.option("--limit", default=None, type=click.IntRange(1), help="Task scoring: first N examples per benchmark.")
@click.option("--max-tokens", default=64, show_default=True, type=click.IntRange(1), help="Most tokens per answer.")
@click.option("--no-task", is_flag=True, help="Routing metrics only: skip the task-score (misrouting cost) runs.")
@click.option("--markdown", "markdown_file", default=None, metavar="FILE", help="Also write the report as Markdown.")
@json_option()
def router_eval(router_name, adapters_dir, limit, max_tokens, no_task, markdown_file, as_json):
    """Accuracy, per-domain precision/recall, confusion, abstention, latency and the cost of misrouting.

    Held-out queries are the adapters' benchmarks plus held-out general questions. The task
    scores compare answers under the router's choices with oracle routing and the base model.
    """
    from locomlx.eval.routing import format_report, routing_report, task_scores
    from locomlx.eval.run import InferenceConfig
    from locomlx.router.load import load_router

    library, registry, engine = _setup(adapters_dir)
    chosen = load_router(router_name, engine, registry, library)
    report, decisions = routing_report(chosen, registry, library, on_progress=_progress)
    if not no_task:
        report.task = task_scores(engine, registry, library, decisions,
                                  InferenceConfig(max_tokens=max_tokens, limit=limit),
                                  on_progress=lambda m: click.echo(m, err=True))
    text = format_report(report)
    if markdown_file:
        Path(markdown_file).write_text(text + "\n", encoding="utf-8")
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else text)
