"""The `locomlx` command line: parses arguments, calls library functions, prints.

No logic lives here; each command's work is in the module named after it.
"""

from __future__ import annotations

import json
import sys
import time
import traceback

import click

import locomlx  # noqa: F401  (preloads the fast CBLAS before mlx.core is imported)
from locomlx.engine.batching import DEFAULT_BATCH
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


def boost_options(f):
    """The inference enhancements, named alike in chat and eval (locomlx/boost)."""
    for option in reversed([
        click.option("--reread", is_flag=True, help="RE2: state the question twice (\"Read the question again: ...\")."),
        click.option("--votes", default=1, show_default=True, type=click.IntRange(1), metavar="N",
                     help="Self-consistency: N sampled answers in one batch, majority vote on the extracted answer."),
        click.option("--vote-temperature", default=0.7, show_default=True, type=click.FloatRange(0), metavar="T",
                     help="Sampling temperature of the --votes samples."),
        click.option("--ensemble", is_flag=True,
                     help="Every registered adapter of the adapter's domain answers (one mixed batch) and they vote."),
    ]):
        f = option(f)
    return f


@main.command()
@click.argument("question", required=False)
@base_model_option
@click.option("--adapter", default="auto", show_default=True, metavar="NAME|none|auto",
              help="Adapter to answer with: a library name or path, none (base model) or auto (router); "
                   "a+b or a:0.7+b:0.3 answers with a weighted sum of adapters (a+b averages them).")
@click.option("--adapters-dir", default=None, metavar="DIR", help="Adapter library folder (default ./adapters; env LOCOMLX_ADAPTERS).")
@click.option("--max-tokens", default=256, show_default=True, type=click.IntRange(1), help="Most tokens to generate per answer.")
@click.option("--temperature", default=0.0, show_default=True, type=click.FloatRange(0), help="0 = greedy (deterministic).")
@click.option("--top-p", default=1.0, show_default=True, type=click.FloatRange(0, 1), help="Nucleus sampling cut-off.")
@click.option("--seed", type=int, default=None, help="Random seed for sampled answers.")
@click.option("--compute-dtype", default="auto", show_default=True,
              type=click.Choice(["auto", "float32", "bfloat16", "quantized"]), help=COMPUTE_DTYPE_HELP)
@click.option("--router", "router_name", default=None, metavar="NAME",
              help="Router for --adapter auto: embedding (default) or keyword. Env: LOCOMLX_ROUTER.")
@boost_options
@click.option("--json", "as_json", is_flag=True, help="Print each answer as one JSON object.")
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
    from locomlx.adapters.library import library_dir
    from locomlx.chat import ChatSession, GenerationSettings
    from locomlx.engine.engine import Engine

    engine = Engine.load(base_model, compute_dtype, on_convert=_announce_conversion)
    settings = GenerationSettings(max_tokens, temperature, top_p, seed, reread, votes, vote_temperature, ensemble)
    session = ChatSession(engine, library_dir(adapters_dir), settings, router_name=router_name)
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


@main.group()
def data():
    """Check training and benchmark JSONL files."""


@data.command("check")
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option("--kind", type=click.Choice(["train", "benchmark"]), default="train", show_default=True,
              help="What the files are: training data (>= 500 examples) or a benchmark (>= 50).")
@click.option("--benchmark", "benchmarks", multiple=True, type=click.Path(), metavar="FILE",
              help="Benchmark to check a training file against for leakage (repeatable); the adapter library's "
                   "benchmarks (*/eval/benchmark.jsonl) are always included.")
@click.option("--adapters-dir", default=None, metavar="DIR", help="Adapter library (default ./adapters).")
@base_model_option
@click.option("--max-seq-length", default=1024, show_default=True, type=click.IntRange(8),
              help="Count examples longer than this many tokens (needs the base model's tokenizer).")
@click.option("--no-length-check", is_flag=True, help="Skip token counting (no base model needed).")
@click.option("--allow-small", is_flag=True, help="Too few examples is a warning instead of an error.")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def data_check(files, kind, benchmarks, adapters_dir, base_model, max_seq_length, no_length_check, allow_small, as_json):
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
    from pathlib import Path

    from locomlx.adapters.library import library_dir
    from locomlx.data.checks import check_file, library_benchmarks
    from locomlx.prompt import length_counter

    counter = None
    if not no_length_check:
        from locomlx.models.load import load_tokenizer_only

        counter = length_counter(load_tokenizer_only(base_model))

    all_benchmarks = [Path(b) for b in benchmarks] + library_benchmarks(library_dir(adapters_dir))
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


def _progress_printer():
    """One updating line on a terminal; a line per report otherwise."""
    tty = sys.stderr.isatty()
    first = None  # (time, step) when this process started showing progress (a resumed run starts late)

    def show(state, point):
        nonlocal first
        if first is None:
            first = (time.perf_counter(), state.step - 1)
        elapsed, done = time.perf_counter() - first[0], state.step - first[1]
        eta = elapsed / max(done, 1) * (state.total_steps - state.step)
        width = 24
        filled = int(width * state.step / state.total_steps)
        last = state.history[-1] if state.history else None
        loss = f" loss {last.train_loss:.3f}" if last else ""
        val = f" val {last.val_loss:.3f}" if last and last.val_loss is not None else ""
        tps = f" {state.trained_tokens / state.train_seconds:.0f} tok/s" if state.train_seconds else ""
        line = (f"[{'#' * filled}{'.' * (width - filled)}] step {state.step}/{state.total_steps} "
                f"epoch {state.step / state.steps_per_epoch:.2f}{loss}{val}{tps} ETA {eta:.0f}s")
        if tty:
            click.echo("\r" + line.ljust(100), nl=state.step == state.total_steps, err=True)
        elif point is not None:
            click.echo(line, err=True)

    return show


@main.command("train")
@click.option("--config", "config_file", type=click.Path(), default=None, metavar="YAML",
              help="Options from a YAML file (e.g. configs/train.yaml); flags override it.")
@base_model_option
@click.option("--dataset", default=None, metavar="FILE", help="Training JSONL ({instruction, input, output}).")
@click.option("--output", default=None, metavar="DIR", help="Adapter directory to create.")
@click.option("--benchmark", default=None, metavar="FILE", help="Benchmark JSONL: checked for leakage, copied to eval/.")
@click.option("--lora-rank", type=int, default=None, help="LoRA rank [16].")
@click.option("--lora-alpha", type=float, default=None, help="LoRA alpha; scale = alpha / rank [2 x rank].")
@click.option("--lora-dropout", type=float, default=None, help="LoRA dropout [0].")
@click.option("--target-modules", default=None, metavar="LIST",
              help="Comma-separated modules inside each block [all linear: self_attn.q_proj,...,mlp.down_proj].")
@click.option("--num-layers", type=int, default=None, help="LoRA on the last N blocks; -1 = all [-1].")
@click.option("--epochs", type=float, default=None, help="Passes over the training data [3].")
@click.option("--lr", type=float, default=None, help="Learning rate (Adam) [2e-4].")
@click.option("--batch-size", type=int, default=None, help="Examples per step [4].")
@click.option("--grad-accumulation", type=int, default=None, help="Steps per optimizer update [1].")
@click.option("--grad-checkpoint/--no-grad-checkpoint", default=None, help="Trade compute for memory [off].")
@click.option("--max-seq-length", type=int, default=None, help="Longer examples are truncated (or dropped) [1024].")
@click.option("--val-fraction", type=float, default=None, help="Share of the data held out for validation [0.1].")
@click.option("--seed", type=int, default=None, help="Seed for the split, batch order and initialisation [0].")
@click.option("--steps-per-eval", type=int, default=None, help="Validation every N steps [50].")
@click.option("--steps-per-save", type=int, default=None, help="Checkpoint every N steps [25].")
@click.option("--compute-dtype", default=None, type=click.Choice(["auto", "float32", "bfloat16", "quantized"]),
              help=COMPUTE_DTYPE_HELP)
@click.option("--allow-small", is_flag=True, default=None, help="Allow fewer than 500 training / 50 benchmark examples.")
@click.option("--adapters-dir", default=None, metavar="DIR", help="Library whose benchmarks are checked for leakage.")
@click.option("--replay", multiple=True, metavar="FILE",
              help="Another task's JSONL (repeatable): its questions, answered by the base model, are mixed into "
                   "training so the adapter keeps the base's behaviour outside its task.")
@click.option("--replay-per-file", type=int, default=None, help="Questions drawn from each --replay file [50].")
@click.option("--replay-max-tokens", type=int, default=None, help="Length of the base's replayed answers [64].")
@click.option("--resume", is_flag=True, help="Continue an interrupted run of the same --output from its checkpoint.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary at the end.")
def train_command(config_file, resume, as_json, **options):
    """Train a LoRA adapter and write the standard adapter directory.

    The data is checked first (see `locomlx data check`); the loss is
    computed on the answer tokens only, with the same prompt format chat and
    evaluation use. Ctrl-C keeps a checkpoint; rerun with --resume.

    \b
    Output (DIR):
      adapter_config.json, adapter_model.safetensors (+ adapters.safetensors link for mlx-lm)
      training/dataset.jsonl, train_config.yaml, TRAINING_LOG.md, loss.svg
      training/replay.jsonl (with --replay: the replayed questions and the base's answers)
      eval/benchmark.jsonl (with --benchmark)

    \b
    Examples:
      locomlx train --dataset data/train.jsonl --output adapters/my-skill --benchmark data/bench.jsonl
      locomlx train --config configs/train.yaml --epochs 1 --lr 1e-4
      locomlx train --dataset data/train.jsonl --output adapters/my-skill --resume
      locomlx train --dataset data/train.jsonl --output adapters/my-skill --replay data/other-task.jsonl
      mlx_lm.generate --model <base dir> --adapter-path adapters/my-skill --prompt "..."
    """
    from locomlx.train.config import load_config
    from locomlx.train.trainer import resume_config, train

    if resume:
        output = options["output"] or (load_config(config_file, {"dataset": "-", "output": "-"}).output if config_file else None)
        if not output or output == "-":
            raise LocomlxError("--resume needs the --output of the interrupted run.")
        config = resume_config(output)
        click.echo(f"Resuming {output} with the configuration stored when it started.", err=True)
    else:
        options["replay"] = list(options["replay"]) or None  # not given: keep the config file's list
        config = load_config(config_file, options)
    result = train(config, resume=resume, on_progress=_progress_printer(),
                   on_message=lambda msg: click.echo(msg, err=True))
    s = result.state
    summary = {"output": str(result.output), "steps": s.step, "trained_tokens": s.trained_tokens,
               "train_seconds": s.train_seconds, "final_train_loss": s.history[-1].train_loss,
               "final_val_loss": s.history[-1].val_loss}
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(f"Adapter written to {result.output} ({s.step} steps, {s.train_seconds:.0f} s, "
                   f"final loss {summary['final_train_loss']:.3f}). Try it: locomlx chat --adapter {result.output}")


def _eval_progress():
    def show(label, done, total):
        click.echo(f"\r  {label}: {done}/{total}".ljust(70), nl=done == total, err=True)

    return show


@main.command("eval")
@click.argument("adapter", required=False, metavar="ADAPTER")
@base_model_option
@click.option("--benchmark", default=None, metavar="FILE", help="Benchmark JSONL [ADAPTER/eval/benchmark.jsonl].")
@click.option("--metric", default=None, type=click.Choice(["exact_match", "choice", "rouge_l", "pass@1", "judge"]),
              help="Override the benchmark's metric.")
@click.option("--limit", default=None, type=click.IntRange(1), help="Score only the first N examples.")
@click.option("--max-tokens", default=256, show_default=True, type=click.IntRange(1), help="Most tokens per answer.")
@click.option("--batch-size", default=DEFAULT_BATCH, show_default=True, type=click.IntRange(1), help="Answers generated together.")
@click.option("--adapters-dir", default=None, metavar="DIR", help="Library whose benchmarks are the out-of-domain check.")
@click.option("--no-ood", is_flag=True, help="Skip the out-of-domain check.")
@click.option("--ood-limit", default=None, type=click.IntRange(1),
              help="Score only the first N examples of each out-of-domain benchmark [all].")
@boost_options
@click.option("--json", "as_json", is_flag=True, help="Print results.json instead of the report.")
def eval_command(adapter, base_model, benchmark, metric, limit, max_tokens, batch_size, adapters_dir, no_ood, ood_limit,
                 reread, votes, vote_temperature, ensemble, as_json):
    """Evaluate an adapter against the base model; exit code 0 = PASS, 2 = FAIL.

    Runs adapter and base (greedy, batched) on the adapter's benchmark, then
    on every other benchmark in the adapter library (out of domain), and
    reports scores with 95% bootstrap intervals, the improvement, a paired
    significance test (McNemar / paired bootstrap) and the verdict: PASS needs
    a significant in-domain gain and no benchmark more than 5 points below
    the base. Writes ADAPTER/eval/{results,base_results,ood_results}.json and
    outputs.jsonl. Without ADAPTER, scores the base model on --benchmark.

    With --reread, --votes or --ensemble, adapter and base are both run with
    the enhancement (an ensemble applies to the adapter) and the files go to
    ADAPTER/eval/enhanced/<enhancements>/, leaving the plain results.json alone.

    \b
    Examples:
      locomlx eval adapters/sentiment
      locomlx eval adapters/sentiment --limit 50 --no-ood
      locomlx eval --benchmark data/benchmark.jsonl          # base model only
      locomlx eval adapters/math --reread --votes 9 --vote-temperature 0.7
    """
    from locomlx.adapters.library import find_adapter, library_dir
    from locomlx.eval.evaluate import evaluate_adapter, format_report
    from locomlx.eval.run import InferenceConfig, run_benchmark

    inference = InferenceConfig(max_tokens=max_tokens, limit=limit, batch_size=batch_size, reread=reread, votes=votes,
                                vote_temperature=vote_temperature)
    library = library_dir(adapters_dir)
    if adapter is None:
        if not benchmark:
            raise LocomlxError("Give an ADAPTER, or --benchmark FILE to score the base model alone.")
        if ensemble:
            raise LocomlxError("--ensemble votes among the adapters of ADAPTER's domain; give an ADAPTER.")
        from locomlx.engine.engine import Engine

        show = _eval_progress()
        run = run_benchmark(Engine.load(base_model), benchmark, None, metric, inference,
                            lambda done, total: show(f"base on {benchmark}", done, total))
        if as_json:
            click.echo(json.dumps(run.to_dict(), indent=2))
        else:
            click.echo(f"base on {benchmark}: {run.metric} {run.score:.3f} 95% CI [{run.ci.low:.3f}, {run.ci.high:.3f}] "
                       f"({run.n_examples} examples, {run.seconds:.0f} s)")
        return
    evaluation = evaluate_adapter(find_adapter(adapter, library), library, base_model, benchmark, metric, inference,
                                  ood=not no_ood, on_progress=_eval_progress(), ensemble=ensemble, ood_limit=ood_limit)
    click.echo(json.dumps(evaluation.results, indent=2) if as_json else format_report(evaluation))
    sys.exit(0 if evaluation.results["passed"] else 2)


from locomlx.cli_registry import adapters, leaderboard, promote, registry, report  # noqa: E402
from locomlx.cli_router import route, router  # noqa: E402

for _command in (registry, adapters, leaderboard, promote, report, route, router):
    main.add_command(_command)


if __name__ == "__main__":
    main()
