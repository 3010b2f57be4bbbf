"""The generated `training/TRAINING_LOG.md` and its loss plot (a dependency-free SVG)."""

from __future__ import annotations

from dataclasses import dataclass

from locomlx.data.training_log import RUN_MARKER, student_part, template_for
from locomlx.train.config import TrainConfig
from locomlx.train.loop import LoopState


@dataclass
class DataStats:
    n_train: int
    n_val: int
    truncated: int
    dropped: int
    mean_tokens: float
    max_tokens: int
    mean_answer_tokens: float
    replayed: int = 0  # replay examples among them (other tasks' questions, base model's answers)


def loss_svg(state: LoopState, width: int = 640, height: int = 320) -> str:
    """Train (blue) and validation (orange) loss against step."""
    pad = 48
    series = {
        "train": [(p.step, p.train_loss) for p in state.history if p.train_loss is not None],
        "validation": [(p.step, p.val_loss) for p in state.history if p.val_loss is not None],
    }
    values = [v for points in series.values() for _, v in points]
    if not values:
        return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"></svg>'
    top, bottom = max(values), min(0.0, min(values))
    last_step = max(state.total_steps, 1)

    def xy(step, value):
        x = pad + (width - 2 * pad) * step / last_step
        y = height - pad - (height - 2 * pad) * (value - bottom) / ((top - bottom) or 1.0)
        return f"{x:.1f},{y:.1f}"

    colors = {"train": "#1f77b4", "validation": "#ff7f0e"}
    parts = [
        (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
         'font-family="sans-serif" font-size="12">'),
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="black"/>',
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="black"/>',
        f'<text x="{width / 2}" y="{height - 12}" text-anchor="middle">step (of {last_step})</text>',
        f'<text x="{pad - 6}" y="{pad + 4}" text-anchor="end">{top:.2f}</text>',
        f'<text x="{pad - 6}" y="{height - pad}" text-anchor="end">{bottom:.2f}</text>',
    ]
    for i, (name, points) in enumerate(series.items()):
        if points:
            path = " ".join(xy(s, v) for s, v in points)
            parts.append(f'<polyline fill="none" stroke="{colors[name]}" stroke-width="2" points="{path}"/>')
        parts.append(f'<text x="{width - pad}" y="{pad + 16 * i}" text-anchor="end" '
                     f'fill="{colors[name]}">{name} loss</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def training_log(config: TrainConfig, state: LoopState, stats: DataStats, facts: dict,
                 existing: str | None = None) -> str:
    """The student's part of the log (`existing`, else the template) above the run record this run writes:
    everything above `RUN_MARKER` is kept as it is, so retraining never loses what the student wrote."""
    student = student_part(existing) if existing else template_for(facts["name"])
    return f"{student}\n\n{RUN_MARKER}\n\n{_run_record(config, state, stats, facts)}"


def _run_record(config: TrainConfig, state: LoopState, stats: DataStats, facts: dict) -> str:
    rows = "\n".join(
        f"| {p.step} | {p.epoch:.2f} | {p.train_loss:.4f} | {'' if p.val_loss is None else f'{p.val_loss:.4f}'} | "
        f"{'' if p.tokens_per_second is None else f'{p.tokens_per_second:.0f}'} |"
        for p in state.history
    )
    hyper = "\n".join(f"| {k} | {v} |" for k, v in config.to_dict().items())
    tps = state.trained_tokens / state.train_seconds if state.train_seconds else 0.0
    return f"""## Training run

Written by `locomlx train` on {facts['finished']}. Every number below comes from this run.

### Data

| | |
| --- | --- |
| dataset | `{config.dataset}` (sha256 `{facts['dataset_sha256']}`) |
| training examples | {stats.n_train} |
| replay examples among training + validation (other tasks' questions, base model's answers: \
`replay.jsonl`) | {stats.replayed} |
| validation examples (held out, seed {config.seed}) | {stats.n_val} |
| examples truncated to {config.max_seq_length} tokens | {stats.truncated} |
| examples dropped (too long, or no answer left after truncation) | {stats.dropped} |
| tokens per example (mean / max) | {stats.mean_tokens:.1f} / {stats.max_tokens} |
| answer tokens per example (mean; the loss is computed on these only) | {stats.mean_answer_tokens:.1f} |

### Base model

`{facts['base_model']}` ({facts['base_source']}, hash `{facts['base_hash']}`), computed in {facts['compute_dtype']}.

### Hyperparameters

| option | value |
| --- | --- |
{hyper}
| lora scale (alpha / rank) | {config.lora_scale} |

### Loss

![loss curve](loss.svg)

| step | epoch | train loss | validation loss | tokens/s |
| --- | --- | --- | --- | --- |
{rows}

### Run

| | |
| --- | --- |
| steps | {state.step} |
| trained tokens | {state.trained_tokens} |
| training time (steps only) | {state.train_seconds:.1f} s |
| wall time (with validation and saving) | {facts['wall_seconds']:.1f} s |
| throughput | {tps:.0f} tokens/s |
| peak memory | {facts['peak_memory_mb']:.0f} MB |
| hardware | {facts['hardware']} |
| ranks (data parallel, mlx.distributed) | {facts['world_size']} |
| software | {facts['software']} |
"""
