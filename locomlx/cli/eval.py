"""`locomlx eval` (and scripts/evaluate.py): an adapter against the base model, in and out of domain, or the
base model alone on a benchmark."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from locomlx.cli.options import (
    MetricName,
    adapters_dir_option,
    base_model_option,
    boost_options,
    counter_progress,
    json_option,
    library_path,
)
from locomlx.engine.batching import DEFAULT_BATCH
from locomlx.errors import LocomlxError

import click


def _list_metrics(ctx, param, value):
    if value:
        from locomlx.scoring.metrics import metrics_markdown

        click.echo(metrics_markdown())
        ctx.exit()


@click.command("eval")
@click.argument("adapter", required=False, metavar="[ADAPTER]")
@click.option("--adapter", "adapter_option", default=None, metavar="DIR",
              help="The adapter, as an option (the contributing guide's form): the same as ADAPTER.")
@base_model_option
@click.option("--benchmark", default=None, metavar="FILE", help="Benchmark JSONL [ADAPTER/eval/benchmark.jsonl].")
@click.option("--metric", default=None, type=MetricName(), help="Override the benchmark's metric.")
@click.option("--limit", default=None, type=click.IntRange(1), help="Score only the first N examples.")
@click.option("--max-tokens", default=256, show_default=True, type=click.IntRange(1), help="Most tokens per answer.")
@click.option("--batch-size", default=DEFAULT_BATCH, show_default=True, type=click.IntRange(1),
              help="Answers generated together.")
@adapters_dir_option
@click.option("--all", "whole_library", is_flag=True,
              help="Every installed adapter of the library, each as `eval ADAPTER` would; under mlx.launch the "
                   "answers are shared among the ranks (docs/distributed.md).")
@click.option("--no-ood", is_flag=True, help="Skip the out-of-domain check.")
@click.option("--ood-limit", default=None, type=click.IntRange(1),
              help="Score only the first N examples of each out-of-domain benchmark [all].")
@click.option("--output", default=None, metavar="FILE",
              help="Write the results JSON here and nowhere else (default: the files under ADAPTER/eval/).")
@click.option("--allow-unisolated-code", is_flag=True,
              help="pass@1 only: run model-written code even where no sandbox (bubblewrap, sandbox-exec) exists, "
                   "with only audit hooks and rlimits between it and your files.")
@click.option("--list-metrics", is_flag=True, is_eager=True, expose_value=False, callback=_list_metrics,
              help="Print the registered metrics (what each compares) and exit.")
@boost_options
@json_option("results.json instead of the report")
def eval_command(adapter, adapter_option, base_model, benchmark, metric, limit, max_tokens, batch_size, adapters_dir,
                 whole_library, no_ood, ood_limit, output, allow_unisolated_code, reread, votes, vote_temperature,
                 ensemble, as_json):
    """Evaluate an adapter against the base model; exit code 0 = PASS, 2 = FAIL.

    Runs adapter and base (greedy, batched) on the adapter's benchmark, then
    on every other benchmark in the adapter library (out of domain), and
    reports scores with 95% bootstrap intervals, the improvement, a paired
    significance test (McNemar / paired bootstrap) and the verdict: PASS needs
    a significant in-domain gain and no benchmark more than 5 points below
    the base. Writes ADAPTER/eval/{results,base_results,ood_results}.json and
    outputs.jsonl, or only --output. Progress goes to stderr.

    \b
    --benchmark of another domain: one out-of-domain check (PASS = at most
      5 points lost there), written to --output or ADAPTER/eval/ood/NAME.json.
    No ADAPTER: the base model alone on --benchmark.
    --reread, --votes, --ensemble: adapter and base both run with the
      enhancement; files go to ADAPTER/eval/enhanced/<enhancements>/.

    \b
    Examples:
      locomlx eval adapters/sentiment
      locomlx eval adapters/sentiment --limit 50 --no-ood
      locomlx eval --benchmark data/benchmark.jsonl          # base model only
      locomlx eval adapters/math --reread --votes 9 --vote-temperature 0.7
      locomlx eval adapters/sentiment --benchmark adapters/spam/eval/benchmark.jsonl   # one OOD check
      locomlx eval --all                                     # the whole library
      mlx.launch --hosts 10.0.0.1,10.0.0.2 -- locomlx eval --all   # the same, on two Macs
    """
    from locomlx.adapters.library import find_adapter
    from locomlx.atomic import write_json_atomic
    from locomlx.eval.evaluate import evaluate_adapter, evaluate_base, format_report
    from locomlx.eval.run import InferenceConfig

    if allow_unisolated_code:
        import os

        from locomlx.scoring.sandbox import ALLOW_ENV

        os.environ[ALLOW_ENV] = "1"  # read where the code runs (scoring/sandbox.py)
    if adapter and adapter_option and adapter != adapter_option:
        raise LocomlxError(f"Two adapters given ({adapter} and --adapter {adapter_option}); give one.")
    adapter = adapter or adapter_option
    inference = InferenceConfig(max_tokens=max_tokens, limit=limit, batch_size=batch_size, reread=reread, votes=votes,
                                vote_temperature=vote_temperature)
    show = counter_progress()
    if whole_library:
        given = [flag for flag, value in [("ADAPTER", adapter), ("--benchmark", benchmark), ("--metric", metric),
                                          ("--base-model", base_model), ("--output", output),
                                          ("--no-ood", no_ood), ("--ensemble", ensemble)] if value]
        if given:
            raise LocomlxError(f"--all evaluates every adapter of the library on its own benchmark, against the "
                               f"registry's base model, writing each adapter's eval/ files; drop {', '.join(given)}.")
        _evaluate_library(adapters_dir, inference, ood_limit, show, as_json)
        return
    if adapter is None:
        if not benchmark:
            raise LocomlxError("Give an ADAPTER, or --benchmark FILE to score the base model alone.")
        if ensemble:
            raise LocomlxError("--ensemble votes among the adapters of ADAPTER's domain; give an ADAPTER.")
        record = evaluate_base(base_model, benchmark, metric, inference,
                               lambda done, total: show(f"base on {benchmark}", done, total))
        if output:
            write_json_atomic(Path(output), record)
        if as_json:
            click.echo(json.dumps(record, indent=2))
        else:
            ci = record["ci"]
            click.echo(f"base on {benchmark}: {record['metric']} {record['score']:.3f} 95% CI [{ci['low']:.3f}, "
                       f"{ci['high']:.3f}] ({record['n_examples']} examples, {record['seconds']:.0f} s)")
        return
    folder = library_path(adapters_dir)
    evaluation = evaluate_adapter(find_adapter(adapter, folder), folder, base_model, benchmark, metric, inference,
                                  ood=not no_ood, on_progress=show, ensemble=ensemble, ood_limit=ood_limit,
                                  output=output)
    click.echo(json.dumps(evaluation.results, indent=2) if as_json else format_report(evaluation))
    sys.exit(0 if evaluation.passed else 2)


def _evaluate_library(adapters_dir, inference, ood_limit, show, as_json):
    from locomlx.distributed import current_world, stop_on_sigterm
    from locomlx.eval.library import evaluate_library

    world = current_world()
    stop_on_sigterm(world)
    message = (lambda m: click.echo(f"[{world.label}] {m}", err=True)) if world.label else \
        (lambda m: click.echo(m, err=True))
    report = evaluate_library(library_path(adapters_dir), world, inference, ood_limit, message, show)
    shards = report.answers
    message(f"{shards.shards} shards: " + ", ".join(
        f"rank {rank} generated {g}, reused {r}" for rank, (g, r) in enumerate(zip(shards.generated, shards.reused))))
    if not world.is_leader:
        return
    if as_json:
        click.echo(json.dumps({"adapters": [e.results for e in report.evaluations], "skipped": report.skipped,
                               "registry_changes": report.registry_changes, "world_size": world.size,
                               "shards": shards.__dict__}, indent=2))
    else:
        click.echo(f"{'adapter':<28} {'score':>6} {'base':>6} {'p':>7} {'ood loss':>8}  verdict")
        for e in report.evaluations:
            r = e.results
            click.echo(f"{r['adapter']:<28} {r['adapter_score']:>6.3f} {r['base_model_score']:>6.3f} "
                       f"{r['p_value']:>7.2g} {r['ood_degradation']:>8.3f}  {'PASS' if r['passed'] else 'FAIL'}")
        for name in report.skipped:
            click.echo(f"{name:<28} skipped: no eval/benchmark.jsonl")
        for change in report.registry_changes:
            click.echo(f"registry: {change}")
    sys.exit(0 if all(e.passed for e in report.evaluations) else 2)
