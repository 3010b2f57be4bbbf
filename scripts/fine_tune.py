#!/usr/bin/env python3
"""Train a LoRA adapter: the contributing guide's entry point, identical to `locomlx train`.

    python scripts/fine_tune.py --base-model smollm2-135m --dataset data/train.jsonl \
        --output adapters/my-skill --lora-rank 16 --epochs 3 --lr 2e-4 --batch-size 4 --max-seq-length 1024

Every flag of `locomlx train --help` works here.
"""

from locomlx.cli import run_as_script
from locomlx.cli.train import train_command

if __name__ == "__main__":
    run_as_script(train_command, "fine_tune.py")
