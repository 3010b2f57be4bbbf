"""`locomlx chat`: one question, or a REPL with slash commands, over a library `Session` (locomlx/session.py)."""

from __future__ import annotations

import json

from locomlx.cli.options import (
    adapters_dir_option,
    announce_conversion,
    base_model_option,
    boost_options,
    compute_dtype_option,
    json_option,
    library_path,
    router_option,
)
from locomlx.errors import LocomlxError

import click

HELP = """Commands:
  /adapter NAME   answer with this adapter (library name or path); 'none' = base model, 'auto' = router,
                  a+b or a:0.7+b:0.3 = a weighted sum of adapters
  /adapters       list resident and available adapters
  /clear          forget the conversation so far
  /stats          timings: base load, adapter loads, last switch, peak memory
  /good           the last answer was good (and rightly routed)
  /bad            the last answer was bad (the routing may still have been right)
  /wrong DOMAIN   the last question should have gone to DOMAIN ('general' = the base model)
                  (verdicts are kept in LIBRARY/router/feedback.sqlite; `locomlx router train --feedback`
                  learns from them, `locomlx feedback list` shows them)
  /help           this text
  /quit           leave (Ctrl-D works too)"""


def stats_text(session) -> str:
    from locomlx.engine.engine import peak_memory_mb

    t = session.engine.timings
    base = session.engine.base
    lines = [
        f"base model:     {base.resolved.reference} ({base.resolved.path}), compute dtype {base.compute_dtype}",
        f"base load:      {t.base_load_seconds * 1000:.0f} ms (once per session)",
    ]
    for name, adapter in session.engine.adapters.items():
        lines.append(f"adapter load:   {name}: {adapter.load_seconds * 1000:.1f} ms, rank {adapter.ranks}, "
                     f"{len(adapter.modules)} layers, {adapter.nbytes / 1e6:.2f} MB")
    lines.append(f"last switch:    {t.last_switch_seconds * 1e6:.1f} µs ({t.switches} selections, no reloads)")
    lines.append(f"peak memory:    {peak_memory_mb():.0f} MB")
    return "\n".join(lines)


def adapters_text(session) -> str:
    from locomlx.adapters.library import list_adapters

    resident = set(session.engine.adapters)
    available = list_adapters(session.library)
    lines = [f"active: {session.requested}"]
    lines += [f"  {'*' if n in resident else ' '} {n}" for n in sorted(resident | set(available))]
    lines.append("(* = resident in memory)" if lines[1:] else f"no adapters in {session.library}")
    return "\n".join(lines)


def feedback_reply(session, verdict: str, domain: str | None) -> str:
    from locomlx.router.embedding import pending_feedback, saved_router_meta
    from locomlx.router.feedback import feedback_path

    record = session.feedback(verdict, domain)
    what = f"wrong, should be {domain}" if verdict == "wrong" else verdict
    lines = [f"recorded #{record.id}: {what} (routed to {record.routed_domain or 'your choice'}, "
             f"adapter {record.adapter or 'none'}) in {feedback_path(session.library)}"]
    meta = saved_router_meta(session.library)
    if meta is not None and (pending := pending_feedback(meta, session.library)):
        lines.append(f"{pending} verdict(s) the router has not learnt from: `locomlx router train --feedback`")
    return "\n".join(lines)


def slash_command(session, line: str) -> str | None:
    """Run one /command of the REPL; returns text to show, or None to quit."""
    name, _, arg = line[1:].strip().partition(" ")
    arg = arg.strip()
    if name in ("quit", "exit", "q"):
        return None
    if name == "adapter":
        if not arg:
            return f"active: {session.requested}; usage: /adapter NAME|none|auto"
        return session.use_adapter(arg)
    if name == "adapters":
        return adapters_text(session)
    if name == "clear":
        session.clear()
        return "conversation cleared"
    if name == "stats":
        return stats_text(session)
    if name in ("good", "bad", "wrong"):
        return feedback_reply(session, name, arg or None)
    if name == "help":
        return HELP
    raise LocomlxError(f"Unknown command '/{name}'; type /help for the list.")


@click.command()
@click.argument("question", required=False)
@base_model_option
@click.option("--adapter", default="auto", show_default=True, metavar="NAME|none|auto",
              help="Adapter to answer with: a library name or path, none (base model) or auto (router); "
                   "a+b or a:0.7+b:0.3 answers with a weighted sum of adapters (a+b averages them).")
@adapters_dir_option
@click.option("--max-tokens", default=256, show_default=True, type=click.IntRange(1),
              help="Most tokens to generate per answer.")
@click.option("--temperature", default=0.0, show_default=True, type=click.FloatRange(0),
              help="0 = greedy (deterministic).")
@click.option("--top-p", default=1.0, show_default=True, type=click.FloatRange(0, 1), help="Nucleus sampling cut-off.")
@click.option("--seed", type=int, default=None, help="Random seed for sampled answers.")
@compute_dtype_option()
@router_option
@boost_options
@json_option("each answer as one JSON object")
def chat(question, base_model, adapter, adapters_dir, max_tokens, temperature, top_p, seed, compute_dtype, router_name,
         reread, votes, vote_temperature, ensemble, as_json):
    """Ask a question (or open a REPL when none is given).

    With --adapter auto (the default) the router picks the specialist for every
    question; each answer ends with a line naming the adapter that produced it,
    the router's confidence, the number of tokens and the speed.

    \b
    Examples:
      locomlx chat "What is the capital of France?"
      locomlx chat --adapter sentiment "Review: a tedious, joyless film."
      locomlx chat --adapter none --json "Name three primary colours."
      locomlx chat --base-model ./my-model.gguf
      locomlx chat --adapter math --reread --votes 9 "What is 17 * 23?"   # footer: 7/9 agree
      locomlx chat --adapter sentiment+spam "..."
    """
    from locomlx.engine.engine import Engine
    from locomlx.session import GenerationSettings, Session

    engine = Engine.load(base_model, compute_dtype, on_convert=announce_conversion)
    settings = GenerationSettings(max_tokens, temperature, top_p, seed, reread, votes, vote_temperature, ensemble)
    session = Session(engine, library_path(adapters_dir), settings, router_name=router_name)
    status = session.use_adapter(adapter)

    def answer(text):
        for chunk in session.stream(text):
            if not as_json:
                click.echo(chunk.text, nl=False)
        if as_json:
            click.echo(json.dumps(chunk.answer.to_dict()))
        else:
            click.echo()
            click.secho(chunk.answer.footer(), dim=True)

    if question:
        answer(question)
        return

    try:
        import readline  # noqa: F401  (line editing and history in the REPL)
    except ImportError:
        pass
    click.echo(f"locomlx chat · base {engine.base.resolved.reference} · {status}. /help for commands, /quit to leave.",
               err=True)
    while True:
        try:
            line = input("> ").strip()
        except EOFError:
            break
        if not line:
            continue
        try:
            if line.startswith("/"):
                reply = slash_command(session, line)
                if reply is None:
                    break
                click.echo(reply)
            else:
                answer(line)
        except LocomlxError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
