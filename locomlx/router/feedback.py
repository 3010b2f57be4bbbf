"""What users say about routed answers, kept in SQLite beside the library, and the routing labels it yields.

Chat's `/good`, `/bad`, `/wrong DOMAIN` and the server's `POST /v1/feedback` each add one row to
`LIBRARY/router/feedback.sqlite` (stdlib sqlite3 in WAL mode, so a REPL and a server can write at once
while `router train` reads). A row keeps the query, the routing decision, the adapter, the answer and
the verdict, so it can be read, exported or learned from later.

How verdicts become routing labels (`routing_labels`):
- `good`: the routed domain was right;
- `wrong DOMAIN`: DOMAIN was right (the user names it);
- `bad`: no routing label: a poor answer from the right specialist says nothing about which domain
  should have answered, so it is kept for the record and for the adapter's authors, not for routing.
Several votes on one query (compared case- and whitespace-insensitively) are counted: the label with the
most votes wins, a tie goes to the most recent of the tied labels.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sqlite3
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

from locomlx.errors import LocomlxError

FILE = Path("router") / "feedback.sqlite"
VERDICTS = ("good", "bad", "wrong")
HELDOUT_EVERY = 5  # one query in five (by hash) is held out to measure what the feedback changed

_SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created TEXT NOT NULL,
    source TEXT NOT NULL,
    response_id TEXT,
    query TEXT NOT NULL,
    router TEXT,
    routed_domain TEXT,
    adapter TEXT,
    confidence REAL,
    answer TEXT,
    verdict TEXT NOT NULL CHECK (verdict IN ('good', 'bad', 'wrong')),
    correct_domain TEXT,
    CHECK ((verdict = 'wrong') = (correct_domain IS NOT NULL))
)"""


@dataclass
class Feedback:
    """One verdict on one routed answer."""

    query: str
    verdict: str  # good | bad | wrong
    routed_domain: str | None = None
    adapter: str | None = None  # None = the base model answered
    confidence: float | None = None
    router: str | None = None
    answer: str | None = None
    correct_domain: str | None = None  # only for `wrong`
    source: str = "chat"  # chat | serve | study
    response_id: str | None = None  # the server's response id
    created: str = ""
    id: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RoutingLabel:
    """A query and the domain the feedback says should answer it."""

    text: str
    domain: str
    votes: int  # votes for this label
    heldout: bool  # held out of training, to measure the change


def feedback_path(library: Path) -> Path:
    return Path(library) / FILE


@contextmanager
def _connect(library: Path, create: bool) -> Iterator[sqlite3.Connection]:
    path = feedback_path(library)
    if not create and not path.is_file():
        yield None
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        connection = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    except sqlite3.Error as exc:
        raise LocomlxError(f"Cannot open the feedback database {path} ({exc}); check that the folder is writable.") \
            from exc
    with closing(connection):
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA busy_timeout=30000")
            connection.execute(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise LocomlxError(f"{path} is not a readable feedback database ({exc}); move it aside (it is "
                               "recreated on the next verdict) or restore it from a backup.") from exc
        yield connection


def check_verdict(verdict: str, correct_domain: str | None, domains: list[str] | None = None) -> None:
    """Refuse a verdict the store would not accept, with the fix."""
    if verdict not in VERDICTS:
        raise LocomlxError(f"Unknown verdict '{verdict}': use one of {', '.join(VERDICTS)}.")
    if verdict == "wrong" and not correct_domain:
        raise LocomlxError("A 'wrong' verdict names the domain that should have answered, e.g. `/wrong spam`"
                           + (f" (domains: {', '.join(domains)})." if domains else "."))
    if verdict != "wrong" and correct_domain:
        raise LocomlxError(f"Only 'wrong' names a correct domain; '{verdict}' takes none.")
    if correct_domain and domains is not None and correct_domain not in domains:
        raise LocomlxError(f"Unknown domain '{correct_domain}'; the library routes to: {', '.join(domains)}.")


def record_feedback(library: Path, feedback: Feedback) -> Feedback:
    """Store one verdict (one transaction) and return it with its id and time."""
    check_verdict(feedback.verdict, feedback.correct_domain)
    if not feedback.query.strip():
        raise LocomlxError("Feedback needs the query it is about; there is no answer to judge yet.")
    created = feedback.created or dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    row = dict(feedback.to_dict(), created=created)
    row.pop("id")
    with _connect(library, create=True) as db:
        cursor = db.execute(f"INSERT INTO feedback ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                            list(row.values()))
        new_id = cursor.lastrowid
    return Feedback(**dict(row, id=new_id))


def read_feedback(library: Path, verdict: str | None = None, limit: int | None = None) -> list[Feedback]:
    """Stored verdicts, oldest first (`limit`: the newest N)."""
    with _connect(library, create=False) as db:
        if db is None:
            return []
        where, args = ("WHERE verdict = ?", [verdict]) if verdict else ("", [])
        rows = db.execute(f"SELECT * FROM feedback {where} ORDER BY id DESC"
                          + (" LIMIT ?" if limit else ""), args + ([limit] if limit else [])).fetchall()
        names = [c[0] for c in db.execute("SELECT * FROM feedback LIMIT 0").description]
    return [Feedback(**dict(zip(names, row))) for row in reversed(rows)]


def clear_feedback(library: Path) -> int:
    """Delete every stored verdict; returns how many there were."""
    with _connect(library, create=False) as db:
        if db is None:
            return 0
        return db.execute("DELETE FROM feedback").rowcount


def last_feedback_id(library: Path) -> int:
    """The newest verdict's id (0 when none): a router records it, so newer feedback can be noticed."""
    with _connect(library, create=False) as db:
        if db is None:
            return 0
        return db.execute("SELECT COALESCE(MAX(id), 0) FROM feedback").fetchone()[0]


def feedback_since(library: Path, last_id: int) -> int:
    """How many verdicts that carry a routing label (good, wrong) arrived after `last_id`."""
    with _connect(library, create=False) as db:
        if db is None:
            return 0
        return db.execute("SELECT COUNT(*) FROM feedback WHERE id > ? AND verdict != 'bad'", [last_id]).fetchone()[0]


def export_feedback(records: list[Feedback]) -> str:
    """JSON Lines, one verdict per line."""
    return "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in records)


def _key(text: str) -> str:
    return " ".join(text.split()).casefold()


def is_heldout(text: str) -> bool:
    """Whether a query belongs to the held-out fifth (stable: a hash of the normalised text)."""
    return int(hashlib.sha256(_key(text).encode()).hexdigest(), 16) % HELDOUT_EVERY == 0


def routing_labels(records: list[Feedback]) -> list[RoutingLabel]:
    """One label per distinct query: the majority of its good/wrong votes, ties to the most recent (module doc)."""
    votes: dict[str, dict[str, list[int]]] = {}  # query key -> domain -> ids of its votes
    texts: dict[str, str] = {}
    for order, r in enumerate(records):
        domain = r.routed_domain if r.verdict == "good" else r.correct_domain if r.verdict == "wrong" else None
        if domain:
            key = _key(r.query)
            texts.setdefault(key, r.query)
            votes.setdefault(key, {}).setdefault(domain, []).append(order)
    labels = []
    for key, by_domain in votes.items():
        domain = max(by_domain, key=lambda d: (len(by_domain[d]), max(by_domain[d])))
        labels.append(RoutingLabel(texts[key], domain, len(by_domain[domain]), is_heldout(texts[key])))
    return labels
