"""`locomlx chat`: one question, or a REPL, answered by the base model or a resident adapter.

The session keeps the engine (and so the base model) for its whole life;
`/adapter NAME` loads an adapter from disk the first time and afterwards only
switches to it, which `/stats` shows by timing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from locomlx.adapters.library import find_adapter, list_adapters
from locomlx.boost.ensemble import load_members
from locomlx.boost.sampling import VoteSettings, answer_by_vote
from locomlx.engine.compose import parse_composition
from locomlx.engine.engine import Engine, Generation, peak_memory_mb
from locomlx.errors import LocomlxError
from locomlx.prompt import user_turn
from locomlx.registry import active_adapters, load_registry
from locomlx.router.decision import RouteDecision, Router
from locomlx.router.load import load_router

AUTO = "auto"
NONE = "none"

HELP = """Commands:
  /adapter NAME   answer with this adapter (library name or path); 'none' = base model, 'auto' = router,
                  a+b or a:0.7+b:0.3 = a weighted sum of adapters
  /adapters       list resident and available adapters
  /clear          forget the conversation so far
  /stats          timings: base load, adapter loads, last switch, peak memory
  /help           this text
  /quit           leave (Ctrl-D works too)"""


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

    def footer(self) -> str:
        g = self.generation
        who = g.adapter or "none (base model)"
        extra = f" · confidence {self.confidence:.2f}" if self.confidence is not None else ""
        note = f" · {self.note}" if self.note else ""
        return f"[adapter: {who}{extra}{note} · {g.generation_tokens} tokens · {g.generation_tps:.1f} tok/s]"

    def to_dict(self) -> dict:
        return {"answer": self.generation.text, "adapter": self.generation.adapter, "requested_adapter": self.requested,
                "confidence": self.confidence, "note": self.note, **{k: v for k, v in self.generation.to_dict().items() if k not in ("text", "adapter")}}


@dataclass
class ChatSession:
    engine: Engine
    library: Path
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    requested: str = AUTO
    history: list[dict] = field(default_factory=list)
    router_name: str | None = None  # --router; None = $LOCOMLX_ROUTER or the default
    _router: Router | None = field(default=None, init=False, repr=False)
    last_route: RouteDecision | None = field(default=None, init=False, repr=False)

    def use_adapter(self, spec: str) -> str:
        """Set the adapter for the following answers, loading it if needed; returns a status line."""
        if spec in (AUTO, NONE):
            self.requested = spec
            return "answering with the router's choice" if spec == AUTO else "answering with the base model"
        if parse_composition(spec):
            return self._use_composition(spec)
        path = find_adapter(spec, self.library)
        name = spec if (self.library / spec) == path else path.name
        if name in self.engine.adapters:
            self.requested = name
            seconds = self.engine.select(name)
            return f"switched to resident adapter '{name}' in {seconds * 1e6:.1f} µs (no reload)"
        resident = self.engine.load_adapter(path, name)
        self.requested = name
        return f"loaded adapter '{name}' from {path} in {resident.load_seconds * 1000:.1f} ms"

    def _use_composition(self, spec: str) -> str:
        """`a+b` or `a:0.7+b:0.3`: load the parts as needed, then answer with their weighted sum (engine/compose.py)."""
        for part, _ in parse_composition(spec):
            if part not in self.engine.adapters:
                self.engine.load_adapter(find_adapter(part, self.library), part)
        self.requested = self.engine.compose(spec)
        return f"answering with the composition {self.requested} (not fused into the base)"

    def _route(self, question: str) -> tuple[str | None, float | None, str]:
        """The adapter for this turn: the user's choice, or the router's for this question (every turn)."""
        if self.requested == NONE:
            return None, None, ""
        if self.requested != AUTO:
            return self.requested, None, ""
        registry = load_registry(self.library)
        if not active_adapters(registry):
            return None, None, f"auto: no active adapters in {self.library / 'registry.yaml'}, base model"
        if self._router is None:
            self._router = load_router(self.router_name, self.engine, registry, self.library)
        decision = self._router.route(question)
        self.last_route = decision
        if decision.adapter is not None and decision.adapter not in self.engine.adapters:
            self.engine.load_adapter(self.library / registry.adapters[decision.adapter].path, decision.adapter)
        note = f"routed: {decision.domain} ({decision.router}, {decision.seconds * 1000:.0f} ms)"
        return decision.adapter, decision.confidence, note + (f"; {decision.reason}" if decision.reason else "")

    def ask(self, question: str, on_text: Callable[[str], None] | None = None) -> Answer:
        adapter, confidence, note = self._route(question)
        messages = self.history + [{"role": "user", "content": question}]
        s = self.settings
        prompt = self.history + [user_turn(question, s.reread)]
        if s.votes > 1 or s.ensemble:
            members = load_members(self.engine, self.library, adapter) if s.ensemble and adapter else [adapter]
            generation, vote = answer_by_vote(self.engine, prompt, members,
                                              VoteSettings(s.votes, s.vote_temperature, s.seed or 0), s.max_tokens)
            if on_text:
                on_text(generation.text)
            voters = f" ({len(members)} adapters)" if len(members) > 1 else ""
            note = " · ".join(filter(None, [note, vote.split + voters]))
        else:
            generation = self.engine.generate(prompt, adapter=adapter, max_tokens=s.max_tokens,
                                              temperature=s.temperature, top_p=s.top_p, seed=s.seed, on_text=on_text)
        self.history = messages + [{"role": "assistant", "content": generation.text}]
        return Answer(generation, self.requested, confidence, note)

    def stats(self) -> str:
        t = self.engine.timings
        base = self.engine.base
        lines = [
            f"base model:     {base.resolved.reference} ({base.resolved.path}), compute dtype {base.compute_dtype}",
            f"base load:      {t.base_load_seconds * 1000:.0f} ms (once per session)",
        ]
        for name, adapter in self.engine.adapters.items():
            lines.append(f"adapter load:   {name}: {adapter.load_seconds * 1000:.1f} ms, rank {adapter.ranks}, "
                         f"{len(adapter.modules)} layers, {adapter.nbytes / 1e6:.2f} MB")
        lines.append(f"last switch:    {t.last_switch_seconds * 1e6:.1f} µs ({t.switches} selections, no reloads)")
        lines.append(f"peak memory:    {peak_memory_mb():.0f} MB")
        return "\n".join(lines)

    def adapters_listing(self) -> str:
        resident = set(self.engine.adapters)
        available = list_adapters(self.library)
        lines = [f"active: {self.requested}"]
        lines += [f"  {'*' if n in resident else ' '} {n}" for n in sorted(resident | set(available))]
        lines.append("(* = resident in memory)" if lines[1:] else f"no adapters in {self.library}")
        return "\n".join(lines)

    def command(self, line: str) -> str | None:
        """Run one /command; returns text to show, or None to quit."""
        name, _, arg = line[1:].strip().partition(" ")
        arg = arg.strip()
        if name in ("quit", "exit", "q"):
            return None
        if name == "adapter":
            if not arg:
                return f"active: {self.requested}; usage: /adapter NAME|none|auto"
            return self.use_adapter(arg)
        if name == "adapters":
            return self.adapters_listing()
        if name == "clear":
            self.history = []
            return "conversation cleared"
        if name == "stats":
            return self.stats()
        if name == "help":
            return HELP
        raise LocomlxError(f"Unknown command '/{name}'; type /help for the list.")

