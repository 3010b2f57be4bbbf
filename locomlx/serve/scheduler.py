"""One decoding loop serving every client: requests join the running batch between decode steps.

The model must never run two forward passes at once, so the ASGI handlers never touch the engine:
they `submit` a `Work` and read its events (`Routed`, `Text`, `Finished`, `Failed`) as the loop
(`run`, on the main thread) emits them. Each turn of the loop takes new requests (routing
each one: the router runs the model too), admits waiting rows into the `LiveBatch` up to `max_batch`,
drops the rows of clients that went away, and advances every row by one token. A request with `n`
choices is `n` rows; a vote (`votes`, `ensemble`) is one batched call of its own (locomlx/boost),
which pauses the running batch while it runs.
"""

from __future__ import annotations

import queue
import threading
import traceback
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Callable

from locomlx.boost.ensemble import load_members
from locomlx.boost.sampling import VoteSettings, answer_by_vote
from locomlx.engine.live import LiveBatch, Sampler, row_sampler
from locomlx.errors import LocomlxError
from locomlx.serve.protocol import AUTO, BASE, Answerer, ApiError, CompletionRequest
from locomlx.session import NONE, AdapterChooser, Choice

VOTE_TEMPERATURE = 0.7  # chat's --vote-temperature default


@dataclass
class Routed:
    answerer: Answerer
    choice: Choice  # kept by the app so a verdict (POST /v1/feedback) can name the routing decision


@dataclass
class Text:
    index: int
    text: str


@dataclass
class Finished:
    index: int
    reason: str  # 'stop' (end of text or a stop sequence) or 'length' (max_tokens)
    tokens: int


@dataclass
class Failed:
    error: ApiError


@dataclass
class Work:
    """One request on its way through the loop; `emit` is called from the loop with each event."""

    request: CompletionRequest
    prompt: list[int]
    emit: Callable[[object], None]
    cancelled: bool = False
    open_rows: int = 0
    released: bool = False


@dataclass
class _Row:
    work: Work
    index: int
    adapter: str | None
    sampler: Sampler
    detokenizer: object
    text: str = ""
    sent: int = 0
    tokens: int = 0


@dataclass
class SchedulerStats:
    decoding: int = 0
    waiting: int = 0
    in_flight: int = 0
    steps: int = 0
    served: int = 0
    failures: list[str] = field(default_factory=list)


class Scheduler:
    def __init__(self, chooser: AdapterChooser, max_batch: int = 32, max_queue: int = 128,
                 cross_request: bool = True):
        self.chooser = chooser
        self.engine = chooser.engine
        self.max_batch, self.max_queue = max_batch, max_queue
        self.cross_request = cross_request  # off: one request's rows at a time (the benchmark's peer)
        self.stats = SchedulerStats()
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._rows: dict[int, _Row] = {}
        self._waiting: deque[_Row] = deque()
        self._live: LiveBatch | None = None

    def stop(self) -> None:
        """End `run` (from any thread)."""
        self._stopping.set()
        self._inbox.put(None)

    def submit(self, work: Work) -> None:
        """Queue `work`, or refuse it (429) when `max_batch` rows decode and `max_queue` requests wait already."""
        with self._lock:
            if self.stats.in_flight >= self.max_batch + self.max_queue:
                raise ApiError(429, f"The server is full: {self.stats.in_flight} requests in flight "
                                    f"(--max-batch {self.max_batch} + --max-queue {self.max_queue}); "
                                    "retry shortly.", None, "queue_full")
            self.stats.in_flight += 1
        self._inbox.put(work)

    def cancel(self, work: Work) -> None:
        """The client went away: its rows leave the batch at the next step."""
        work.cancelled = True
        self._inbox.put(None)

    # --- the decoding loop --------------------------------------------------------------

    def run(self, until: Callable[[], bool] = lambda: False, poll_seconds: float = 0.5) -> None:
        """Decode until `stop()` or until `until()` is true (checked at least every `poll_seconds`).

        Call it on the main thread: MLX's compiled CPU kernels, first run on another thread, abort the
        process at exit ("terminate called without an active exception"), so the HTTP server is the
        one that runs on a thread of its own (serve/server.py)."""
        self._stopping.clear()
        if self._live is None:
            self._live = LiveBatch(self.engine, self.max_batch)
        while not self._stopping.is_set() and not until():
            idle = not self._rows and not self._waiting
            items = []
            try:
                items.append(self._inbox.get(block=idle, timeout=poll_seconds if idle else None))
                while True:
                    items.append(self._inbox.get_nowait())
            except queue.Empty:
                pass
            for work in items:
                if work is not None:
                    self._begin(work)
            self._drop_cancelled()
            self._admit()
            self._step()
            self.stats.decoding, self.stats.waiting = len(self._rows), len(self._waiting)

    def _release(self, work: Work) -> None:
        if work.released:
            return
        work.released = True
        with self._lock:
            self.stats.in_flight -= 1
            self.stats.served += 1

    def _fail(self, work: Work, error: Exception) -> None:
        if isinstance(error, ApiError):
            api = error
        elif isinstance(error, LocomlxError):
            api = ApiError(400, str(error), None, "locomlx_error")
        else:
            self.stats.failures.append(traceback.format_exc())
            api = ApiError(500, f"Internal error while answering: {type(error).__name__}: {error}", None,
                           "internal_error")
        work.emit(Failed(api))
        self._release(work)

    def _choose(self, request: CompletionRequest) -> tuple[Answerer, Choice]:
        requested = NONE if request.model == BASE else request.model
        if requested not in (NONE, AUTO):
            requested, _ = self.chooser.load(requested)
        choice = self.chooser.choose(requested, request.question)
        decision = choice.decision
        chain = [asdict(step) for step in decision.chain] if decision else []
        return Answerer(request.model, choice.adapter, choice.domain, choice.confidence,
                        decision.router if decision else None, choice.note, chain), choice

    def _begin(self, work: Work) -> None:
        """Route a new request and queue its rows, or answer it at once by vote."""
        try:
            answerer, choice = self._choose(work.request)
            work.emit(Routed(answerer, choice))
            request = work.request
            if request.votes > 1 or request.ensemble:
                self._vote(work, answerer)
                return
            for index in range(request.n):
                seed = None if request.seed is None else request.seed + index
                self._waiting.append(_Row(work, index, answerer.adapter,
                                          row_sampler(request.temperature, request.top_p, seed),
                                          self.engine.tokenizer.detokenizer))
            work.open_rows = request.n
        except Exception as exc:  # noqa: BLE001 - one bad request must not stop the loop
            self._fail(work, exc)

    def _vote(self, work: Work, answerer: Answerer) -> None:
        request = work.request
        adapter = answerer.adapter
        members = load_members(self.engine, self.chooser.library, adapter) if request.ensemble and adapter else [
            adapter]
        generation, vote = answer_by_vote(self.engine, request.messages, members,
                                          VoteSettings(request.votes, VOTE_TEMPERATURE, request.seed or 0),
                                          request.max_tokens)
        answerer.note = " · ".join(filter(None, [answerer.note, vote.split]))
        work.emit(Text(0, generation.text))
        work.emit(Finished(0, "stop", generation.generation_tokens))
        self._release(work)

    def _drop_cancelled(self) -> None:
        for uid, row in list(self._rows.items()):
            if row.work.cancelled:
                self._live.remove(uid)
                self._close_row(uid, None)
        kept = [row for row in self._waiting if not row.work.cancelled]
        for row in self._waiting:
            if row.work.cancelled:
                self._close(row, None)
        self._waiting = deque(kept)

    def _admit(self) -> None:
        while self._waiting and len(self._rows) < self.max_batch:
            row = self._waiting[0]
            if not self.cross_request and any(r.work is not row.work for r in self._rows.values()):
                return
            if not self._live.covers(row.adapter):  # an adapter loaded after the batch opened
                if self._rows:
                    return  # it waits until the batch drains
                self._live.close()
                self._live = LiveBatch(self.engine, self.max_batch)
            self._waiting.popleft()
            try:
                uid = self._live.add(row.work.prompt, row.adapter, row.work.request.max_tokens, row.sampler)
            except Exception as exc:  # noqa: BLE001
                row.work.cancelled = True
                self._fail(row.work, exc)
                continue
            self._rows[uid] = row

    def _step(self) -> None:
        if not self._rows:
            return
        try:
            steps = self._live.step()
        except Exception as exc:  # noqa: BLE001 - fail the rows, keep serving with a fresh batch
            works = {id(r.work): r.work for r in self._rows.values()}
            self._rows.clear()
            self._live = LiveBatch(self.engine, self.max_batch)
            for work in works.values():
                work.cancelled = True
                self._fail(work, exc)
            return
        self.stats.steps += 1
        for step in steps:
            row = self._rows.get(step.uid)
            if row is not None:
                self._advance(step.uid, row, step.token, step.finished)

    def _advance(self, uid: int, row: _Row, token: int, finished: str | None) -> None:
        detokenizer = row.detokenizer
        if finished != "stop":  # 'stop' is the end-of-text token itself
            row.tokens += 1
            detokenizer.add_token(token)
        if finished:
            detokenizer.finalize()
        row.text += detokenizer.last_segment
        stops = row.work.request.stop
        if stops:
            longest = max(len(s) for s in stops)
            start = max(0, row.sent - longest)
            hits = [i for i in (row.text.find(s, start) for s in stops) if i >= 0]
            if hits:
                row.text = row.text[:min(hits)]
                finished = "stop"
                if uid in self._live.rows:
                    self._live.remove(uid)
            safe = len(row.text) if finished else max(row.sent, len(row.text) - longest + 1)
        else:
            safe = len(row.text)
        if safe > row.sent:
            row.work.emit(Text(row.index, row.text[row.sent:safe]))
            row.sent = safe
        if finished:
            self._close_row(uid, finished)

    def _close_row(self, uid: int, reason: str | None) -> None:
        self._close(self._rows.pop(uid), reason)

    def _close(self, row: _Row, reason: str | None) -> None:
        if reason is not None and not row.work.cancelled:
            row.work.emit(Finished(row.index, reason, row.tokens))
        row.work.open_rows -= 1
        if row.work.open_rows == 0:
            self._release(row.work)
