"""Command line of the router: `locomlx route` and `locomlx router train|eval`.

Parses arguments, calls locomlx.router and locomlx.eval.routing, prints.
"""

from __future__ import annotations

import json
from pathlib import Path

from locomlx.cli.options import adapters_dir_option, counter_progress, json_option, library_path, router_option
from locomlx.errors import LocomlxError

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
@click.option("--feedback", "use_feedback", is_flag=True,
              help="Also learn from the verdicts stored by chat's /good and /wrong and by POST /v1/feedback "
                   "(LIBRARY/router/feedback.sqlite); prints accuracy before and after on held-out feedback.")
@click.option("--feedback-weight", default=None, type=click.FloatRange(min=0, min_open=True),
              help="How many training queries one correction counts as.  [default: 20]")
@json_option()
def router_train(adapters_dir, per_domain, layers, seed, use_feedback, feedback_weight, as_json):
    """Train the embedding router for the current registry; saves LIBRARY/router/embedding.npz.

    Uses every registered adapter's training data plus LIBRARY/router/general.jsonl (questions for
    the base model), holds out 20% to calibrate the confidence and pick the fallback chain's
    thresholds. Retrain whenever adapters are added, removed or promoted: a stale router refuses to run.

    \b
    With --feedback, users' verdicts become routing examples (good: the routed domain was right;
    wrong DOMAIN: DOMAIN was; bad: not used for routing; several votes on one query: the majority,
    ties to the newest). One query in five is held out of training to show what the feedback changed.

    \b
    Examples:
      locomlx router train
      locomlx router train --feedback
      locomlx router train --feedback --feedback-weight 10 --json
    """
    from locomlx.router.embedding import FEEDBACK_WEIGHT, save_router, train_embedding_router
    from locomlx.router.feedback import read_feedback, routing_labels

    if feedback_weight is not None and not use_feedback:
        raise click.UsageError("--feedback-weight only applies with --feedback.")
    library, registry, engine = _setup(adapters_dir)
    labels = routing_labels(read_feedback(library)) if use_feedback else None
    if use_feedback and not labels:
        click.echo("no feedback with a routing label yet (chat's /good or /wrong DOMAIN, POST /v1/feedback): "
                   "training on the library's data alone", err=True)
    show = counter_progress()
    trained = train_embedding_router(engine, registry, library, per_domain, layers, seed=seed, feedback=labels,
                                     feedback_weight=feedback_weight or FEEDBACK_WEIGHT,
                                     on_progress=lambda m: click.echo(m, err=True),
                                     on_count=lambda done, total: show("embedded queries", done, total))
    path = save_router(trained, library)
    if as_json:
        click.echo(json.dumps(dict(trained.meta, path=str(path)), indent=2))
        return
    m = trained.meta
    click.echo(f"saved {path}: {len(trained.classes)} classes ({', '.join(trained.classes)}), "
               f"{m['train_queries']} training / {m['validation_queries']} validation queries, {m['seconds']:.1f} s")
    bars = ", ".join(f"{d} {t:.2f}" for d, t in m["thresholds"].items())
    click.echo(f"validation accuracy {m['validation_accuracy']:.3f} · thresholds {bars} · "
               f"temperature {m['temperature']:.2f} · ECE {m['ece_uncalibrated']:.3f} -> {m['ece']:.3f} (calibrated)")
    if f := m.get("feedback"):
        def show_accuracy(value):
            return "n/a (none held out)" if value is None else f"{value:.3f}"

        click.echo(f"feedback: {f['labels']} labelled queries, {f['taught']} learnt (weight {f['weight']:g}), "
                   f"{f['heldout']} held out")
        click.echo(f"  held-out feedback accuracy:  before {show_accuracy(f['heldout_accuracy_before'])} -> "
                   f"after {show_accuracy(f['heldout_accuracy_after'])}")
        click.echo(f"  library validation accuracy: before {f['library_validation_accuracy_before']:.3f} -> "
                   f"after {f['library_validation_accuracy_after']:.3f}")


@router.command("eval")
@router_option
@adapters_dir_option
@click.option("--limit", default=None, type=click.IntRange(1), help="Task scoring: first N examples per benchmark.")
@click.option("--max-tokens", default=64, show_default=True, type=click.IntRange(1), help="Most tokens per answer.")
@click.option("--no-task", is_flag=True, help="Routing metrics only: skip the task-score (misrouting cost) runs.")
@click.option("--compare", default="keyword,embedding,arrow", show_default=True, metavar="NAMES",
              help="Routers to put side by side on both test sets (comma-separated); '' for none.")
@click.option("--markdown", "markdown_file", default=None, metavar="FILE", help="Also write the report as Markdown.")
@json_option()
def router_eval(router_name, adapters_dir, limit, max_tokens, no_task, compare, markdown_file, as_json):
    """Accuracy, per-domain precision/recall, confusion, abstention, latency and the cost of misrouting.

    Two test sets: held-out queries (the adapters' benchmarks plus held-out general questions, the
    same sources the router trained on) and the shifted set LIBRARY/router/shifted.jsonl (other corpora,
    phrased as students write; scripts/data/shifted_routing.py). The task scores compare answers under the
    router's choices with oracle routing and the base model. Then every router in --compare is measured
    on both sets side by side.

    \b
    Examples:
      locomlx router eval --no-task
      locomlx router eval --router arrow --compare ''
      locomlx router eval --max-tokens 64 --markdown docs/router_eval.md
    """
    from locomlx.eval.routing import compare_routers, format_comparison, format_report
    from locomlx.eval.run import InferenceConfig
    from locomlx.router.load import load_router
    from locomlx.router.load import router_name as resolve_router

    library, registry, engine = _setup(adapters_dir)
    inference = InferenceConfig(max_tokens=max_tokens, limit=limit)
    chosen = load_router(router_name, engine, registry, library)
    routers, unavailable = [chosen], {}
    for name in dict.fromkeys(resolve_router(n.strip()) for n in compare.split(",") if n.strip()):
        if name != chosen.name:
            try:
                routers.append(load_router(name, engine, registry, library))
            except LocomlxError as exc:
                unavailable[name] = str(exc)
    comparison = compare_routers(routers, registry, library, None if no_task else engine, inference,
                                 on_progress=lambda m: click.echo(m, err=True), on_count=_progress)
    report, moved = comparison[0].in_distribution, comparison[0].shifted
    sections = [format_report(report)]
    if moved:
        sections.append(format_report(moved, "shifted (router/shifted.jsonl, test split)"))
    if len(comparison) > 1 or unavailable:
        sections.append("Routers side by side\n\n" + format_comparison(comparison)
                        + "".join(f"\n\n{name}: not measured ({why})" for name, why in unavailable.items()))
    text = "\n\n".join(sections)
    if markdown_file:
        Path(markdown_file).write_text(text + "\n", encoding="utf-8")
    if as_json:
        click.echo(json.dumps(dict(report.to_dict(), shifted=moved.to_dict() if moved else None,
                                   comparison=[c.to_dict() for c in comparison], unavailable=unavailable), indent=2))
    else:
        click.echo(text)
