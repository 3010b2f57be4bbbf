"""The `locomlx` command line: parses arguments, calls library functions, prints.

No logic lives here; each command's work is in the module named after it.
"""

from __future__ import annotations

import json
import sys
import traceback

import click

import locomlx  # noqa: F401  (preloads the fast CBLAS before mlx.core is imported)
from locomlx.errors import LocomlxError

COMPUTE_DTYPE_HELP = (
    "Weights to compute with: auto (float32 on CPU, 4-bit on Metal/CUDA), float32, bfloat16, quantized."
)


class _Group(click.Group):
    """Turns LocomlxError into one clean line and exit code 1 (full traceback with --debug)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except LocomlxError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                traceback.print_exc()
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.version_option(locomlx.__version__, prog_name="locomlx")
@click.pass_context
def main(ctx, debug):
    """locomlx: one small 4-bit base model, many LoRA specialists, answers on your laptop.

    \b
    Quick start:
      locomlx chat "What is the capital of France?"
      locomlx chat                      # interactive; /help lists commands
    """
    ctx.obj = {"debug": debug}


def _announce_conversion(gguf_path, out_dir):
    click.echo(f"Converting {gguf_path.name} to MLX once (cached in {out_dir}) ...", err=True)


def base_model_option(f):
    return click.option(
        "--base-model", default=None, metavar="MODEL",
        help="smollm2-135m (default), a .gguf file, an mlx-lm directory, or a Hugging Face repo id. "
             "Env: LOCOMLX_BASE_MODEL.",
    )(f)


@main.command()
@click.argument("question", required=False)
@base_model_option
@click.option("--adapter", default="auto", show_default=True, metavar="NAME|none|auto",
              help="Adapter to answer with: a library name or path, none (base model) or auto (router).")
@click.option("--adapters-dir", default=None, metavar="DIR", help="Adapter library folder (default ./adapters; env LOCOMLX_ADAPTERS).")
@click.option("--max-tokens", default=256, show_default=True, type=click.IntRange(1), help="Most tokens to generate per answer.")
@click.option("--temperature", default=0.0, show_default=True, type=click.FloatRange(0), help="0 = greedy (deterministic).")
@click.option("--top-p", default=1.0, show_default=True, type=click.FloatRange(0, 1), help="Nucleus sampling cut-off.")
@click.option("--seed", type=int, default=None, help="Random seed for sampled answers.")
@click.option("--compute-dtype", default="auto", show_default=True,
              type=click.Choice(["auto", "float32", "bfloat16", "quantized"]), help=COMPUTE_DTYPE_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print each answer as one JSON object.")
def chat(question, base_model, adapter, adapters_dir, max_tokens, temperature, top_p, seed, compute_dtype, as_json):
    """Ask a question (or open a REPL when none is given).

    Each answer ends with a line naming the adapter that produced it, the
    number of tokens and the speed.

    \b
    Examples:
      locomlx chat "What is the capital of France?"
      locomlx chat --adapter sentiment "Review: a tedious, joyless film."
      locomlx chat --adapter none --json "Name three primary colours."
      locomlx chat --base-model ./my-model.gguf
    """
    from locomlx.adapters.library import library_dir
    from locomlx.chat import ChatSession, GenerationSettings
    from locomlx.engine.engine import Engine

    engine = Engine.load(base_model, compute_dtype, on_convert=_announce_conversion)
    session = ChatSession(engine, library_dir(adapters_dir), GenerationSettings(max_tokens, temperature, top_p, seed))
    status = session.use_adapter(adapter)

    def answer(text):
        stream = None if as_json else (lambda piece: click.echo(piece, nl=False))
        result = session.ask(text, on_text=stream)
        if as_json:
            click.echo(json.dumps(result.to_dict()))
        else:
            click.echo()
            click.secho(result.footer(), dim=True)

    if question:
        answer(question)
        return

    try:
        import readline  # noqa: F401  (line editing and history in the REPL)
    except ImportError:
        pass
    click.echo(f"locomlx chat · base {engine.base.resolved.reference} · {status}. /help for commands, /quit to leave.", err=True)
    while True:
        try:
            line = input("> ").strip()
        except EOFError:
            break
        if not line:
            continue
        try:
            if line.startswith("/"):
                reply = session.command(line)
                if reply is None:
                    break
                click.echo(reply)
            else:
                answer(line)
        except LocomlxError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)


@main.command()
@base_model_option
@click.option("--prompt-tokens", default=512, show_default=True, type=click.IntRange(1), help="Prompt length for prefill.")
@click.option("--decode-tokens", default=128, show_default=True, type=click.IntRange(1), help="Tokens to decode.")
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(1), help="Timed repeats per figure (median).")
@click.option("--json", "as_json", is_flag=True, help="Print the raw results as JSON.")
def bench(base_model, prompt_tokens, decode_tokens, repeats, as_json):
    """Measure adapter switching and inference speed, each against a peer in the same run.

    Resident adapter switch and load-from-disk against reloading base +
    adapter; prefill/decode tok/s and peak memory of the default CPU path
    (float32 + CBLAS) against plain MLX (4-bit, bundled BLAS) and, if torch is
    installed (pip install -e .[torch]), against transformers on the same weights.

    \b
    Examples:
      locomlx bench
      locomlx bench --prompt-tokens 256 --decode-tokens 64 --json > bench.json
    """
    from locomlx.bench import BenchSettings, format_report, run_bench

    results = run_bench(BenchSettings(base_model, prompt_tokens, decode_tokens, repeats),
                        progress=lambda msg: click.echo(msg, err=True))
    click.echo(json.dumps(results, indent=2) if as_json else format_report(results))


if __name__ == "__main__":
    main()
