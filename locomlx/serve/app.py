"""The ASGI app (Starlette): OpenAI's endpoints over one `Scheduler`, JSON errors for every bad request, and the
web page at `/`.

Handlers never touch the engine (the scheduler's loop owns it, serve/scheduler.py): they check the request, count its
prompt's tokens, submit it and relay the thread's events, as one JSON body or as server-sent events
ending in `data: [DONE]`. A client that disconnects mid-stream frees its rows.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from locomlx.engine.compose import parse_composition
from locomlx.engine.engine import Engine
from locomlx.errors import LocomlxError
from locomlx.prompt import render_prompt
from locomlx.registry import load_registry
from locomlx.registry.leaderboard import leaderboard
from locomlx.serve.protocol import (
    AUTO,
    BASE,
    ApiError,
    CompletionRequest,
    chunk_body,
    new_id,
    parse_feedback,
    parse_request,
    response_body,
    usage,
)
from locomlx.serve.scheduler import Failed, Finished, Routed, Scheduler, Text, Work
from locomlx.session import Choice

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

PAGE = Path(__file__).with_name("static") / "index.html"
REMEMBERED = 1000  # responses a verdict can still be given on (POST /v1/feedback), newest kept


@dataclass
class ServeState:
    """What the app serves: the scheduler (and through it the engine), the library and the key."""

    scheduler: Scheduler
    library: Path
    api_key: str | None = None
    started: float = field(default_factory=time.time)
    recent: OrderedDict = field(default_factory=OrderedDict)  # response id -> (question, Choice, texts)

    def remember(self, rid: str, question: str, choice: Choice, texts: list[str]) -> None:
        self.recent[rid] = (question, choice, texts)
        while len(self.recent) > REMEMBERED:
            self.recent.popitem(last=False)

    @property
    def engine(self) -> Engine:
        return self.scheduler.engine


def _error(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status)


def _check_key(state: ServeState, request: Request) -> None:
    if state.api_key is None:
        return
    header = request.headers.get("authorization", "")
    given = header[7:] if header.lower().startswith("bearer ") else ""
    if not hmac.compare_digest(given.encode(), state.api_key.encode()):
        raise ApiError(401, "Missing or wrong API key: send 'Authorization: Bearer KEY' with the key the server "
                            "was started with (--api-key or LOCOMLX_API_KEY).", None, "invalid_api_key")


def _model_names(state: ServeState) -> list[str]:
    return [AUTO, BASE] + [n for n, a in state.engine.adapters.items() if a.parts is None]


def _check_model(state: ServeState, name: str) -> None:
    adapters = state.engine.adapters
    if name in (AUTO, BASE) or name in adapters:
        return
    try:
        parts = parse_composition(name)
    except (LocomlxError, ValueError) as exc:
        raise ApiError(400, f"'model': {exc}", "model", "invalid_value") from exc
    missing = [part for part, _ in parts or [(name, 1.0)] if part not in adapters]
    if missing:
        raise ApiError(404, f"The model '{missing[0]}' does not exist here. Available: "
                            f"{', '.join(_model_names(state))}, or a composition such as a:0.7+b:0.3 "
                            "(GET /v1/models).", "model", "model_not_found")


def _prompt_tokens(state: ServeState, request: CompletionRequest) -> list[int]:
    tokenizer = state.engine.tokenizer
    tokens = (render_prompt(tokenizer, request.messages) if request.chat
              else list(tokenizer.encode(request.prompt)))
    context = state.engine.base.context_length
    if len(tokens) + request.max_tokens > context:
        raise ApiError(400, f"The prompt is {len(tokens)} tokens and max_tokens is {request.max_tokens}: "
                            f"{len(tokens) + request.max_tokens} in all, over the model's context of {context} "
                            "tokens. Shorten the messages or lower max_tokens.", "messages" if request.chat
                       else "prompt", "context_length_exceeded")
    if not tokens:
        raise ApiError(400, "The prompt is empty after tokenization.", "prompt", "invalid_value")
    return tokens


async def _read_json(request: Request):
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"The request body is not valid JSON: {exc}.", None, "invalid_json") from exc


async def _submit(state: ServeState, request: Request, chat: bool):
    _check_key(state, request)
    completion = parse_request(await _read_json(request), chat)
    _check_model(state, completion.model)
    prompt = await run_in_threadpool(_prompt_tokens, state, completion)
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    work = Work(completion, prompt, lambda event: loop.call_soon_threadsafe(events.put_nowait, event))
    state.scheduler.submit(work)
    first = await events.get()
    if isinstance(first, Failed):
        raise first.error
    assert isinstance(first, Routed)
    return completion, work, events, first


def _sse(body: dict) -> str:
    return f"data: {json.dumps(body)}\n\n"


async def _stream(state: ServeState, completion: CompletionRequest, work: Work, events: asyncio.Queue,
                  routed: Routed):
    answerer = routed.answerer
    rid = new_id(completion.chat)
    done: dict[int, int] = {}
    started: set[int] = set()
    texts = [""] * completion.n
    try:
        while len(done) < completion.n:
            event = await events.get()
            if isinstance(event, Failed):
                yield _sse(event.error.body())
                break
            if isinstance(event, Text):
                texts[event.index] += event.text
                yield _sse(chunk_body(completion, rid, event.index, event.text, None, answerer,
                                      role=event.index not in started))
                started.add(event.index)
            elif isinstance(event, Finished):
                done[event.index] = event.tokens
                yield _sse(chunk_body(completion, rid, event.index, "", event.reason, answerer,
                                      role=event.index not in started))
        if len(done) == completion.n:
            state.remember(rid, completion.question, routed.choice, texts)
        if completion.include_usage:
            yield _sse(chunk_body(completion, rid, None, "", None, answerer,
                                  used=usage(len(work.prompt), sum(done.values()))))
        yield "data: [DONE]\n\n"
    finally:
        if len(done) < completion.n:
            state.scheduler.cancel(work)


async def _collect(state: ServeState, request: Request, completion: CompletionRequest, work: Work,
                   events: asyncio.Queue, routed: Routed) -> Response:
    answerer = routed.answerer
    texts = [""] * completion.n
    finishes: list[str | None] = [None] * completion.n
    tokens = 0
    try:
        while any(f is None for f in finishes):
            try:
                event = await asyncio.wait_for(events.get(), timeout=1.0)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    state.scheduler.cancel(work)
                    return Response(status_code=499)
                continue
            if isinstance(event, Failed):
                return _error(event.error)
            if isinstance(event, Text):
                texts[event.index] += event.text
            elif isinstance(event, Finished):
                finishes[event.index] = event.reason
                tokens += event.tokens
    except asyncio.CancelledError:
        state.scheduler.cancel(work)
        raise
    rid = new_id(completion.chat)
    body = response_body(completion, rid, texts, finishes, usage(len(work.prompt), tokens), answerer)
    state.remember(rid, completion.question, routed.choice, texts)
    return JSONResponse(body, headers=answerer.headers())


def create_app(state: ServeState) -> Starlette:
    async def completions(request: Request, chat: bool) -> Response:
        completion, work, events, routed = await _submit(state, request, chat)
        if completion.stream:
            return StreamingResponse(_stream(state, completion, work, events, routed),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", **routed.answerer.headers()})
        return await _collect(state, request, completion, work, events, routed)

    async def chat_completions(request: Request) -> Response:
        return await completions(request, chat=True)

    async def text_completions(request: Request) -> Response:
        return await completions(request, chat=False)

    async def models(request: Request) -> Response:
        _check_key(state, request)
        base = state.engine.base.resolved.reference
        registry = await run_in_threadpool(load_registry, state.library)
        created = int(state.started)
        data = [{"id": AUTO, "object": "model", "created": created, "owned_by": "locomlx", "parent": base,
                 "domain": None, "active": True, "description": "the router picks an adapter per question"},
                {"id": BASE, "object": "model", "created": created, "owned_by": "locomlx", "parent": base,
                 "domain": None, "active": True, "description": f"the base model {base}, no adapter"}]
        for name, resident in state.engine.adapters.items():
            if resident.parts is not None:
                continue
            entry = registry.adapters.get(name)
            data.append({"id": name, "object": "model", "created": created, "owned_by": "locomlx", "parent": base,
                         "domain": entry.domain if entry else None, "active": bool(entry and entry.active),
                         "description": entry.description if entry else "",
                         "version": entry.version if entry else None})
        return JSONResponse({"object": "list", "data": data})

    async def board(request: Request) -> Response:
        _check_key(state, request)
        registry = await run_in_threadpool(load_registry, state.library)
        rankings = await run_in_threadpool(leaderboard, registry, None, state.library)
        return JSONResponse({"academic_year": registry.base_model.academic_year if registry.base_model else None,
                             "domains": {d: [asdict(r) for r in rows] for d, rows in rankings.items()}})

    async def feedback(request: Request) -> Response:
        _check_key(state, request)
        verdict = parse_feedback(await _read_json(request))
        remembered = state.recent.get(verdict.response_id)
        if remembered is None:
            raise ApiError(404, f"No response '{verdict.response_id}' to give feedback on: the server remembers its "
                                f"last {REMEMBERED} completed responses since it started.", "id", "response_not_found")
        question, choice, texts = remembered
        if verdict.index >= len(texts):
            raise ApiError(400, f"'index' {verdict.index}: response '{verdict.response_id}' has {len(texts)} "
                                "choice(s).", "index", "invalid_value")
        try:
            record = await run_in_threadpool(state.scheduler.chooser.record, question, choice, texts[verdict.index],
                                             verdict.verdict, verdict.domain, "serve", verdict.response_id)
        except LocomlxError as exc:
            raise ApiError(400, str(exc), "domain" if verdict.domain else "verdict", "invalid_value") from exc
        return JSONResponse({"object": "feedback", "id": record.id, "response_id": verdict.response_id,
                             "verdict": record.verdict, "domain": record.correct_domain,
                             "routed_domain": record.routed_domain, "adapter": record.adapter})

    async def health(request: Request) -> Response:
        s = state.scheduler.stats
        return JSONResponse({"status": "ok", "base_model": state.engine.base.resolved.reference,
                             "adapters": len(_model_names(state)) - 2, "decoding": s.decoding, "waiting": s.waiting,
                             "in_flight": s.in_flight, "served": s.served,
                             "uptime_seconds": round(time.time() - state.started, 1)})

    async def page(request: Request) -> Response:
        return FileResponse(PAGE, media_type="text/html")

    async def api_error(request: Request, exc: ApiError) -> Response:
        return _error(exc)

    async def http_error(request: Request, exc: HTTPException) -> Response:
        return _error(ApiError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}. "
                                                "The API is under /v1 (GET /v1/models).", None, "not_found"))

    async def server_error(request: Request, exc: Exception) -> Response:
        return _error(ApiError(500, f"Internal error: {type(exc).__name__}: {exc}", None, "internal_error"))

    routes = [
        Route("/", page),
        Route("/health", health),
        Route("/v1/models", models),
        Route("/v1/leaderboard", board),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", text_completions, methods=["POST"]),
        Route("/v1/feedback", feedback, methods=["POST"]),
    ]

    return Starlette(routes=routes,
                     exception_handlers={ApiError: api_error, HTTPException: http_error, Exception: server_error})
