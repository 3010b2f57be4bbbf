"""`locomlx migrate`: retrain the library's active adapters on another base model and compare."""

from __future__ import annotations

import os
from pathlib import Path

from locomlx.cli.options import (
    adapters_dir_option,
    counter_progress,
    echo_json,
    json_option,
    library_path,
    training_progress,
)

import click


@click.command("migrate")
@click.option("--base-model", required=True, metavar="MODEL",
              help="The candidate base: a built-in name (e.g. gemma3-270m), a .gguf file, an mlx-lm directory or "
                   "a Hugging Face repo id.")
@click.option("--output", required=True, metavar="DIR", help="The new library folder (created; resumed if it exists).")
@adapters_dir_option
@click.option("--adapter", "only", multiple=True, metavar="NAME",
              help="Migrate only this active adapter (repeatable) [every active adapter].")
@click.option("--limit", default=None, type=click.IntRange(1),
              help="Score only the first N benchmark examples (a smoke run; the report says so).")
@click.option("--ood-limit", default=None, type=click.IntRange(1),
              help="Examples of each out-of-domain benchmark [what the old evaluation used].")
@click.option("--adr-dir", default="docs/adr", show_default=True, metavar="DIR",
              help="Where the decision record draft goes (NNNN-base-model-NAME.md).")
@json_option("the per-domain rows")
def migrate(base_model, output, adapters_dir, only, limit, ood_limit, adr_dir, as_json):
    """Retrain every active adapter on another base model and report old vs new.

    Each active adapter of the library is trained again on --base-model from
    its own training/dataset.jsonl and train_config.yaml (same rank, learning
    rate, epochs, seed; its replay questions answered by the new base), into
    the new library --output with a registry for that base. Each is evaluated
    on the same benchmark with the same settings as before, in and out of
    domain, and promoted where it passes the bar. Writes OUTPUT/MIGRATION.md
    (per domain: old and new base scores, adapter scores, gain, significance,
    which base wins, training time, memory, speed) and an ADR draft.

    Long: one training and one evaluation per adapter. Interrupted, the same
    command resumes: finished steps are kept.

    \b
    Examples:
      locomlx migrate --base-model gemma3-270m --output libraries/gemma3-270m
      locomlx migrate --base-model gemma3-270m --output /tmp/try --adapter spam-assassin --limit 50
    """
    from locomlx.eval.migrate import MigrationSettings, adr_draft, migrate_library, next_adr_number, pending_adapters
    from locomlx.registry import load_registry

    library = library_path(adapters_dir)
    output = Path(output)
    rows = migrate_library(library, base_model, output, MigrationSettings(limit, ood_limit), list(only) or None,
                           on_message=lambda m: click.echo(m, err=True), on_progress=training_progress(),
                           on_eval_progress=counter_progress())
    old_base = load_registry(library).base_model
    old_name = old_base.id if old_base else "the old base"
    adr = Path(adr_dir)
    adr.mkdir(parents=True, exist_ok=True)
    slug = "".join(c if c.isalnum() else "-" for c in Path(base_model).name.lower()).strip("-")
    existing = sorted(adr.glob(f"*-base-model-{slug}.md"))
    adr_path = existing[0] if existing else adr / f"{next_adr_number(adr):04d}-base-model-{slug}.md"
    report = output / "MIGRATION.md"
    link = Path(os.path.relpath(report.resolve(), adr.resolve()))
    adr_path.write_text(adr_draft(rows, old_name, base_model, link, pending_adapters(library, rows)),
                        encoding="utf-8")
    if as_json:
        from dataclasses import asdict

        echo_json([asdict(r) | {"gain": r.gain, "winner": r.winner} for r in rows])
        return
    click.echo(report.read_text(encoding="utf-8"))
    click.echo(f"Report: {report}; decision record draft: {adr_path}")
