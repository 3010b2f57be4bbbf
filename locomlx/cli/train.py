"""`locomlx train` (and scripts/fine_tune.py): train a LoRA adapter into the standard adapter directory."""

from __future__ import annotations

import json

from locomlx.cli.options import (
    adapters_dir_option,
    base_model_option,
    compute_dtype_option,
    json_option,
    training_progress,
)
from locomlx.errors import LocomlxError

import click


@click.command("train")
@click.option("--config", "config_file", type=click.Path(), default=None, metavar="YAML",
              help="Options from a YAML file (e.g. configs/train.yaml); flags override it.")
@base_model_option
@click.option("--dataset", default=None, metavar="FILE", help="Training JSONL ({instruction, input, output}).")
@click.option("--output", default=None, metavar="DIR", help="Adapter directory to create.")
@click.option("--benchmark", default=None, metavar="FILE",
              help="Benchmark JSONL: checked for leakage, copied to eval/.")
@click.option("--lora-rank", type=int, default=None, help="LoRA rank [16].")
@click.option("--lora-alpha", type=float, default=None, help="LoRA alpha; scale = alpha / rank [2 x rank].")
@click.option("--lora-dropout", type=float, default=None, help="LoRA dropout [0].")
@click.option("--target-modules", default=None, metavar="LIST",
              help="Comma-separated modules inside each block [every linear layer of the model's blocks, "
                   "e.g. self_attn.q_proj,...,mlp.down_proj; phi3: self_attn.qkv_proj,...].")
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
@compute_dtype_option(default=None)
@click.option("--allow-small", is_flag=True, default=None,
              help="Allow fewer than 500 training / 50 benchmark examples.")
@adapters_dir_option
@click.option("--replay", multiple=True, metavar="FILE",
              help="Another task's JSONL (repeatable): its questions, answered by the base model, are mixed into "
                   "training so the adapter keeps the base's behaviour outside its task.")
@click.option("--replay-per-file", type=int, default=None, help="Questions drawn from each --replay file [50].")
@click.option("--replay-max-tokens", type=int, default=None, help="Length of the base's replayed answers [64].")
@click.option("--resume", is_flag=True, help="Continue an interrupted run of the same --output from its checkpoint.")
@json_option("a summary at the end")
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
      mlx.launch --hosts 10.0.0.1,10.0.0.2 -- locomlx train --config configs/train.yaml   # data parallel

    Under mlx.launch, --batch-size is the global batch, split among the ranks (docs/distributed.md).
    """
    from locomlx.train.config import load_config
    from locomlx.train.trainer import resume_config, train

    if resume:
        output = options["output"] or (
            load_config(config_file, {"dataset": "-", "output": "-"}).output if config_file else None)
        if not output or output == "-":
            raise LocomlxError("--resume needs the --output of the interrupted run.")
        config = resume_config(output)
        click.echo(f"Resuming {output} with the configuration stored when it started.", err=True)
    else:
        options["replay"] = list(options["replay"]) or None  # not given: keep the config file's list
        config = load_config(config_file, options)
    from locomlx.distributed import current_world, stop_on_sigterm

    world = current_world()
    stop_on_sigterm(world, "Its last checkpoint is kept on rank 0's host: run the same command with --resume (with "
                           "or without mlx.launch) to continue.")
    leader = world.is_leader
    result = train(config, resume=resume, on_progress=training_progress() if leader else None,
                   on_message=(lambda msg: click.echo(msg, err=True)) if leader else (lambda msg: None),
                   world=world)
    if not leader:
        return
    s = result.state
    summary = {"output": str(result.output), "steps": s.step, "trained_tokens": s.trained_tokens,
               "train_seconds": s.train_seconds, "final_train_loss": s.history[-1].train_loss,
               "final_val_loss": s.history[-1].val_loss}
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(f"Adapter written to {result.output} ({s.step} steps, {s.train_seconds:.0f} s, "
                   f"final loss {summary['final_train_loss']:.3f}). Try it: locomlx chat --adapter {result.output}")
