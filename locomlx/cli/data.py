"""`locomlx data check`: validate training and benchmark JSONL files before training on them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from locomlx.cli.options import adapters_dir_option, base_model_option, json_option, library_path

import click


@click.group()
def data():
    """Check training and benchmark JSONL files."""


@data.command("check")
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option("--kind", type=click.Choice(["train", "benchmark"]), default="train", show_default=True,
              help="What the files are: training data (>= 500 examples) or a benchmark (>= 50).")
@click.option("--benchmark", "benchmarks", multiple=True, type=click.Path(), metavar="FILE",
              help="Benchmark to check a training file against for leakage (repeatable); the adapter library's "
                   "benchmarks (*/eval/benchmark.jsonl) are always included.")
@adapters_dir_option
@base_model_option
@click.option("--max-seq-length", default=1024, show_default=True, type=click.IntRange(8),
              help="Count examples longer than this many tokens (needs the base model's tokenizer).")
@click.option("--no-length-check", is_flag=True, help="Skip token counting (no base model needed).")
@click.option("--allow-small", is_flag=True, help="Too few examples is a warning instead of an error.")
@json_option("the findings")
def data_check(files, kind, benchmarks, adapters_dir, base_model, max_seq_length, no_length_check, allow_small,
               as_json):
    """Validate JSONL files of {"instruction", "input", "output"} examples.

    Reports, with file and line: invalid JSON, missing/extra/non-string fields,
    empty outputs, non-UTF-8 lines, exact and near duplicates, examples longer
    than --max-seq-length tokens, too few examples, and training examples that
    leak a benchmark. Exit code 1 when any error is found.

    \b
    Examples:
      locomlx data check train.jsonl --benchmark eval/benchmark.jsonl
      locomlx data check --kind benchmark eval/benchmark.jsonl --no-length-check
    """
    from locomlx.data.checks import check_file, library_benchmarks
    from locomlx.prompt import length_counter

    counter = None
    if not no_length_check:
        from locomlx.models.load import load_tokenizer_only

        counter = length_counter(load_tokenizer_only(base_model))

    all_benchmarks = [Path(b) for b in benchmarks] + library_benchmarks(library_path(adapters_dir))
    reports = [check_file(f, kind, allow_small, all_benchmarks, counter, max_seq_length) for f in files]
    if as_json:
        click.echo(json.dumps([{"file": r.path, "kind": r.kind, "examples": len(r.examples),
                                "problems": [p.__dict__ for p in r.problems]} for r in reports], indent=2))
    else:
        for r in reports:
            for problem in r.problems:
                click.secho(str(problem), fg="red" if problem.severity == "error" else "yellow")
            verdict = "FAIL" if r.errors else "OK"
            click.echo(f"{r.path}: {verdict} · {len(r.examples)} examples · {len(r.errors)} errors · "
                       f"{len(r.warnings)} warnings")
    if any(r.errors for r in reports):
        sys.exit(1)
