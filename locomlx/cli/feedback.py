"""`locomlx feedback list | export | clear`: the verdicts users gave on routed answers (locomlx/router/feedback.py)."""

from __future__ import annotations

import json

from locomlx.cli.options import adapters_dir_option, json_option, library_path

import click


@click.group()
def feedback():
    """Verdicts on routed answers: chat's /good, /bad, /wrong DOMAIN and the server's POST /v1/feedback.

    They are stored in LIBRARY/router/feedback.sqlite; `locomlx router train --feedback` learns from them.
    """


@feedback.command("list")
@adapters_dir_option
@click.option("--verdict", type=click.Choice(["good", "bad", "wrong"]), default=None, help="Only this verdict.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the newest N.")
@json_option("the verdicts")
def feedback_list(adapters_dir, verdict, limit, as_json):
    """Show stored verdicts, oldest first.

    \b
    Examples:
      locomlx feedback list
      locomlx feedback list --verdict wrong --limit 20
    """
    from locomlx.router.embedding import pending_feedback, saved_router_meta
    from locomlx.router.feedback import feedback_path, read_feedback

    library = library_path(adapters_dir)
    records = read_feedback(library, verdict, limit)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in records], indent=2))
        return
    if not records:
        click.echo(f"no feedback in {feedback_path(library)}")
        return
    click.echo(f"{'id':>5}  {'created':20}  {'verdict':12}  {'routed to':12}  {'adapter':20}  query")
    for r in records:
        verdict_text = f"wrong: {r.correct_domain}" if r.verdict == "wrong" else r.verdict
        query = " ".join(r.query.split())
        click.echo(f"{r.id:>5}  {r.created[:19]:20}  {verdict_text:12}  {r.routed_domain or '-':12}  "
                   f"{r.adapter or 'base model':20}  {query[:60] + ('…' if len(query) > 60 else '')}")
    meta = saved_router_meta(library)
    if meta is not None and (pending := pending_feedback(meta, library)):
        click.echo(f"{pending} verdict(s) with a routing label are newer than the router: "
                   "`locomlx router train --feedback` learns from them.")


@feedback.command("export")
@adapters_dir_option
@click.option("--output", "-o", default=None, metavar="FILE", help="Write JSON Lines here instead of stdout.")
def feedback_export(adapters_dir, output):
    """Every verdict as JSON Lines (query, routing decision, adapter, answer, verdict), e.g. to share or archive."""
    from locomlx.atomic import write_text_atomic
    from locomlx.router.feedback import export_feedback, read_feedback

    records = read_feedback(library_path(adapters_dir))
    text = export_feedback(records)
    if output:
        from pathlib import Path

        write_text_atomic(Path(output), text)
        click.echo(f"wrote {len(records)} verdicts to {output}", err=True)
    else:
        click.echo(text, nl=False)


@feedback.command("clear")
@adapters_dir_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def feedback_clear(adapters_dir, yes):
    """Delete every stored verdict (export them first to keep a copy)."""
    from locomlx.router.feedback import clear_feedback, feedback_path, read_feedback

    library = library_path(adapters_dir)
    count = len(read_feedback(library))
    if count and not yes:
        click.confirm(f"Delete all {count} verdicts in {feedback_path(library)}?", abort=True)
    click.echo(f"deleted {clear_feedback(library)} verdicts")
