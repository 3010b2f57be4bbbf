"""A conversation with the routed library: route the question, load the adapter, answer, remember the turn.

The base model stays resident for the session's whole life; an adapter is read
from disk the first time it is needed and afterwards only selected. Chat's REPL,
a server or a notebook use the same session, and stream through the same
generator:

    session = Session(Engine.load(), library_dir())
    for chunk in session.stream("Is this review positive? ..."):
        print(chunk.text, end="")
    print(chunk.answer.footer())
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from locomlx.adapters.library import find_adapter
from locomlx.boost.ensemble import load_members
from locomlx.boost.sampling import VoteSettings, answer_by_vote
from locomlx.engine.compose import parse_composition
from locomlx.engine.engine import Engine, Generation
from locomlx.errors import LocomlxError
from locomlx.prompt import user_turn
from locomlx.registry import active_adapters, load_registry
from locomlx.registry.compat import base_fingerprint, base_mismatch
from locomlx.registry.store import read_registry
from locomlx.router.decision import GENERAL, RouteDecision, Router
from locomlx.router.feedback import Feedback, check_verdict, record_feedback
from locomlx.router.load import load_router

AUTO = "auto"
NONE = "none"


@dataclass
class GenerationSettings:
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    reread: bool = False  # RE2, and the three below: locomlx/boost
    votes: int = 1
    vote_temperature: float = 0.7
    ensemble: bool = False


@dataclass
class Answer:
    """An answer plus the routing facts printed under it."""

    generation: Generation
    requested: str  # what the user asked for: a name, 'none' or 'auto'
    confidence: float | None = None
    note: str = ""
    route: RouteDecision | None = None  # the router's decision, when it chose

    def footer(self) -> str:
        g = self.generation
        who = g.adapter or "none (base model)"
        extra = f" · confidence {self.confidence:.2f}" if self.confidence is not None else ""
        note = f" · {self.note}" if self.note else ""
        tokens = f"{g.generation_tokens} token{'s' if g.generation_tokens != 1 else ''}"
        speed = f" · {g.generation_tps:.1f} tok/s" if g.generation_tokens > 1 else ""  # one token: no rate to speak of
        return f"[adapter: {who}{extra}{note} · {tokens}{speed}]"

    def to_dict(self) -> dict:
        stats = {k: v for k, v in self.generation.to_dict().items() if k not in ("text", "adapter")}
        return {"answer": self.generation.text, "adapter": self.generation.adapter, "requested_adapter": self.requested,
                "confidence": self.confidence, "note": self.note,
                "route": self.route.to_dict() if self.route else None, **stats}


@dataclass
class AnswerChunk:
    """A piece of an answer's text as it is decoded; the last chunk of a stream carries the whole `answer`."""

    text: str
    answer: Answer | None = None


@dataclass
class Choice:
    """Who answers one question, and why: the adapter (None = base), its domain, the router's confidence."""

    adapter: str | None
    domain: str | None = None
    confidence: float | None = None
    note: str = ""
    decision: RouteDecision | None = None


@dataclass
class AdapterChooser:
    """Route -> load: the one place a request's `auto`, `none`, adapter name or composition becomes a resident
    adapter. Chat's session and the server share it; the router is loaded on first use."""

    engine: Engine
    library: Path
    router_name: str | None = None  # None = $LOCOMLX_ROUTER or the default router
    _router: Router | None = field(default=None, init=False, repr=False)
    _base_fingerprint: tuple[str, str] | None = field(default=None, init=False, repr=False)  # hashed once

    def load(self, spec: str) -> tuple[str, str]:
        """Make `spec` (a library name, a path or a composition) resident; returns its resident name and a
        status line."""
        if parse_composition(spec):
            for part, _ in parse_composition(spec):
                if part not in self.engine.adapters:
                    self.engine.load_adapter(find_adapter(part, self.library), part)
            name = self.engine.compose(spec)
            return name, f"answering with the composition {name} (not fused into the base)"
        path = find_adapter(spec, self.library)
        name = spec if (self.library / spec) == path else path.name
        if name in self.engine.adapters:
            seconds = self.engine.select(name)
            return name, f"switched to resident adapter '{name}' in {seconds * 1e6:.1f} µs (no reload)"
        resident = self.engine.load_adapter(path, name)
        return name, f"loaded adapter '{name}' from {path} in {resident.load_seconds * 1000:.1f} ms"

    def domains(self) -> list[str]:
        """What a `wrong DOMAIN` verdict may name: the active domains and general (the base model)."""
        return sorted(active_adapters(load_registry(self.library))) + [GENERAL]

    def record(self, question: str, choice: Choice, answer: str, verdict: str, correct_domain: str | None = None,
               source: str = "chat", response_id: str | None = None) -> Feedback:
        """Store a user's verdict on one answer (router/feedback.py), checked against the library's domains."""
        check_verdict(verdict, correct_domain, self.domains() if correct_domain else None)
        router = choice.decision.router if choice.decision else None
        return record_feedback(self.library, Feedback(question, verdict, choice.domain, choice.adapter,
                                                      choice.confidence, router, answer, correct_domain, source,
                                                      response_id))

    def choose(self, requested: str, question: str) -> Choice:
        """The answerer of `question`: the requested adapter, the base (`none`), or the router's choice (`auto`),
        loaded if needed."""
        if requested == NONE:
            return Choice(None)
        if requested != AUTO:
            entry = read_registry(self.library)[0].adapters.get(requested)  # only for its domain: never refuses
            return Choice(requested, entry.domain if entry else None)
        registry = load_registry(self.library)
        if not active_adapters(registry):
            return Choice(None, note=f"auto: no active adapters in {self.library / 'registry.yaml'}, base model")
        if self._base_fingerprint is None:
            self._base_fingerprint = base_fingerprint(self.engine.base.resolved)
        other_base = registry.base_model and base_mismatch(registry.base_model, self.engine.base.resolved,
                                                           self._base_fingerprint)
        if other_base:
            return Choice(None, note=f"auto: base model, since {self.library} is not for it: {other_base}; "
                                     "give --adapters-dir a library trained for this base")
        if self._router is None:
            self._router = load_router(self.router_name, self.engine, registry, self.library)
        decision = self._router.route(question)
        reason = decision.reason
        if decision.adapter is not None and decision.adapter not in self.engine.adapters:
            try:
                self.engine.load_adapter(self.library / registry.adapters[decision.adapter].path, decision.adapter)
            except LocomlxError as exc:  # the chain's last step: the base model answers rather than nobody
                failed = f"{decision.adapter} could not be loaded ({exc}): base model"
                reason = "; ".join(filter(None, [reason, failed]))
                return Choice(None, GENERAL, decision.confidence, f"routed: {decision.domain}; {reason}", decision)
        note = f"routed: {decision.domain} ({decision.router}, {decision.seconds * 1000:.0f} ms)"
        return Choice(decision.adapter, decision.domain, decision.confidence,
                      note + (f"; {reason}" if reason else ""), decision)


@dataclass
class Session:
    engine: Engine
    library: Path
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    requested: str = AUTO
    history: list[dict] = field(default_factory=list)
    router_name: str | None = None  # None = $LOCOMLX_ROUTER or the default router
    last_route: RouteDecision | None = field(default=None, init=False, repr=False)
    last_turn: tuple[str, Choice, str] | None = field(default=None, init=False, repr=False)  # question, who, answer
    chooser: AdapterChooser = field(init=False, repr=False)

    def __post_init__(self):
        self.chooser = AdapterChooser(self.engine, self.library, self.router_name)

    def use_adapter(self, spec: str) -> str:
        """Set the adapter for the following answers, loading it if needed; returns a status line."""
        if spec in (AUTO, NONE):
            self.requested = spec
            return "answering with the router's choice" if spec == AUTO else "answering with the base model"
        self.requested, status = self.chooser.load(spec)
        return status

    def route(self, question: str) -> Choice:
        """The answerer of this turn (loaded if needed), the router's confidence and a note on how it was chosen:
        the user's choice, or the router's for this question (every turn)."""
        choice = self.chooser.choose(self.requested, question)
        if choice.decision is not None:
            self.last_route = choice.decision
        return choice

    def feedback(self, verdict: str, correct_domain: str | None = None) -> Feedback:
        """The user's verdict on the last answer (chat's /good, /bad, /wrong DOMAIN), stored beside the library."""
        if self.last_turn is None:
            raise LocomlxError("There is no answer to judge yet: ask a question first.")
        question, choice, answer = self.last_turn
        return self.chooser.record(question, choice, answer, verdict, correct_domain)

    def stream(self, question: str) -> Iterator[AnswerChunk]:
        """Answer `question` in the conversation so far, yielding text as it is decoded (a voted answer comes
        whole, once the vote is counted); the last chunk carries the `Answer`."""
        choice = self.route(question)
        adapter, confidence, note = choice.adapter, choice.confidence, choice.note
        s = self.settings
        prompt = self.history + [user_turn(question, s.reread)]
        if s.votes > 1 or s.ensemble:
            members = load_members(self.engine, self.library, adapter) if s.ensemble and adapter else [adapter]
            generation, vote = answer_by_vote(self.engine, prompt, members,
                                              VoteSettings(s.votes, s.vote_temperature, s.seed or 0), s.max_tokens)
            yield AnswerChunk(generation.text)
            voters = f" ({len(members)} adapters)" if len(members) > 1 else ""
            note = " · ".join(filter(None, [note, vote.split + voters]))
        else:
            for chunk in self.engine.stream_generate(prompt, adapter=adapter, max_tokens=s.max_tokens,
                                                     temperature=s.temperature, top_p=s.top_p, seed=s.seed):
                if chunk.text:
                    yield AnswerChunk(chunk.text)
                generation = chunk.generation
        self.history += [{"role": "user", "content": question}, {"role": "assistant", "content": generation.text}]
        self.last_turn = (question, choice, generation.text)
        yield AnswerChunk("", Answer(generation, self.requested, confidence, note, choice.decision))

    def ask(self, question: str) -> Answer:
        """The whole answer at once (see `stream`)."""
        for chunk in self.stream(question):
            pass
        return chunk.answer

    def clear(self) -> None:
        """Forget the conversation so far (the resident adapters stay)."""
        self.history = []
