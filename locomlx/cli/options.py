"""Options and output helpers shared by every command, declared once so they read alike everywhere."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

COMPUTE_DTYPES = ["auto", "float32", "bfloat16", "quantized"]
COMPUTE_DTYPE_HELP = (
    "Weights to compute with: auto (float32 on CPU, 4-bit on Metal/CUDA), float32, bfloat16, quantized."
)


def base_model_option(f):
    return click.option(
        "--base-model", default=None, metavar="MODEL",
        help="smollm2-135m (default), gemma3-270m (opt-in), a .gguf file, an mlx-lm directory, or a Hugging "
             "Face repo id. Env: LOCOMLX_BASE_MODEL.",
    )(f)


def adapters_dir_option(f):
    return click.option("--adapters-dir", default=None, metavar="DIR",
                        help="Adapter library folder, holding registry.yaml and every adapter's benchmark "
                             "(default ./adapters; env LOCOMLX_ADAPTERS).")(f)


def json_option(what: str = "the result"):
    """`--json`: print `what` as JSON for scripts instead of the human report."""
    def decorate(f):
        return click.option("--json", "as_json", is_flag=True, help=f"Print {what} as JSON.")(f)

    return decorate


def compute_dtype_option(default: str | None = "auto"):
    def decorate(f):
        return click.option("--compute-dtype", default=default, show_default=default is not None,
                            type=click.Choice(COMPUTE_DTYPES), help=COMPUTE_DTYPE_HELP)(f)

    return decorate


def router_option(f):
    return click.option("--router", "router_name", default=None, metavar="NAME",
                        help="embedding (default; trained by `locomlx router train`), keyword (registry hints) "
                             "or arrow (training-free, from the adapters' LoRA weights). Env: LOCOMLX_ROUTER.")(f)


def boost_options(f):
    """The inference enhancements, named alike in chat and eval (locomlx/boost)."""
    for option in reversed([
        click.option("--reread", is_flag=True,
                     help="RE2: state the question twice (\"Read the question again: ...\")."),
        click.option("--votes", default=1, show_default=True, type=click.IntRange(1), metavar="N",
                     help="Self-consistency: N sampled answers in one batch, majority vote on the extracted answer."),
        click.option("--vote-temperature", default=0.7, show_default=True, type=click.FloatRange(0), metavar="T",
                     help="Sampling temperature of the --votes samples."),
        click.option("--ensemble", is_flag=True,
                     help="Every registered adapter of the adapter's domain answers (one mixed batch) and they vote."),
    ]):
        f = option(f)
    return f


class MetricName(click.ParamType):
    """A metric of the registry (locomlx/scoring/metrics.py), looked up when the command runs so that metrics
    registered by any module are accepted."""

    name = "metric"

    def get_metavar(self, param, ctx=None):
        from locomlx.scoring.metrics import metric_names

        return "[" + "|".join(metric_names()) + "]"

    def convert(self, value, param, ctx):
        from locomlx.scoring.metrics import metric_names

        if value not in metric_names():
            self.fail(f"'{value}' is not a metric; choose from {', '.join(metric_names())}.", param, ctx)
        return value


def library_path(adapters_dir: str | None) -> Path:
    from locomlx.adapters.library import library_dir

    return library_dir(adapters_dir)


def echo_json(data) -> None:
    click.echo(json.dumps(data, indent=2))


def announce_conversion(gguf_path, out_dir) -> None:
    click.echo(f"Converting {gguf_path.name} to MLX once (cached in {out_dir}) ...", err=True)


def counter_progress():
    """`show(label, done, total)`: one redrawn line per task on a terminal; elsewhere (a log, CI) a line at
    every tenth of the task, so a long run is never silent and a log stays short."""
    tty = sys.stderr.isatty()
    shown: dict[str, int] = {}  # label -> tenths already printed

    def show(label, done, total):
        if tty:
            click.echo(f"\r  {label}: {done}/{total}".ljust(70), nl=done == total, err=True)
            return
        tenths = done * 10 // max(total, 1)
        if tenths > shown.get(label, -1) or done == total:
            shown[label] = tenths
            click.echo(f"  {label}: {done}/{total}", err=True)

    return show


def training_progress():
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
