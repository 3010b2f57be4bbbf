"""`locomlx bench`: adapter switching and inference speed, each against a peer in the same run (locomlx/bench.py)."""

from __future__ import annotations

import json

from locomlx.cli.options import base_model_option, json_option

import click


@click.command()
@base_model_option
@click.option("--prompt-tokens", default=512, show_default=True, type=click.IntRange(1),
              help="Prompt length for prefill.")
@click.option("--decode-tokens", default=128, show_default=True, type=click.IntRange(1), help="Tokens to decode.")
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(1),
              help="Timed repeats per figure (median).")
@click.option("--rounds", default=3, show_default=True, type=click.IntRange(1),
              help="Runs of every path (one process each), in alternating order; speeds are their median.")
@json_option("the raw results")
def bench(base_model, prompt_tokens, decode_tokens, repeats, rounds, as_json):
    """Measure adapter switching and inference speed, each against a peer in the same run.

    Resident adapter switch and load-from-disk against reloading base +
    adapter; prefill/decode tok/s and peak memory of the default CPU path
    (float32 + CBLAS) against plain MLX (4-bit, bundled BLAS) and, if torch is
    installed (pip install -e .[torch]), against transformers on the same weights.

    \b
    Examples:
      locomlx bench
      locomlx bench --prompt-tokens 256 --decode-tokens 64 --json > bench.json
      locomlx bench --rounds 1        # one run per path: quicker, noisier
    """
    from locomlx.bench import BenchSettings, format_report, run_bench

    results = run_bench(BenchSettings(base_model, prompt_tokens, decode_tokens, repeats, rounds),
                        progress=lambda msg: click.echo(msg, err=True))
    click.echo(json.dumps(results, indent=2) if as_json else format_report(results))
