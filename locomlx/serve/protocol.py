"""OpenAI's request and response shapes, checked field by field: a bad request becomes an `ApiError` that names
the field and says what would be accepted, never an exception the server dies of.

`model` picks the answerer: `auto` (the router, per request), `base`, an adapter's name, or a composition
`a:0.7+b:0.3`. The vendor extensions `reread`, `votes` and `ensemble` mirror `locomlx chat`'s flags.
Every response carries a `locomlx` object saying who answered and why.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from locomlx.prompt import user_turn

AUTO = "auto"
BASE = "base"
ROLES = ("system", "user", "assistant")
MAX_N = 16
MAX_VOTES = 16


@dataclass
class ApiError(Exception):
    """An error in OpenAI's JSON shape: {"error": {"message", "type", "param", "code"}}."""

    status: int
    message: str
    param: str | None = None
    code: str | None = None

    @property
    def kind(self) -> str:
        return {400: "invalid_request_error", 401: "authentication_error", 404: "invalid_request_error",
                429: "rate_limit_error"}.get(self.status, "server_error")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


@dataclass
class CompletionRequest:
    """One request of /v1/chat/completions (`messages`) or /v1/completions (`prompt`), validated."""

    model: str
    messages: list[dict] | None = None
    prompt: str | None = None
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    n: int = 1
    stream: bool = False
    include_usage: bool = False
    reread: bool = False
    votes: int = 1
    ensemble: bool = False

    @property
    def chat(self) -> bool:
        return self.messages is not None

    @property
    def question(self) -> str:
        """What the router reads: the last user turn of a chat, or the whole prompt."""
        if self.messages is None:
            return self.prompt or ""
        users = [m["content"] for m in self.messages if m["role"] == "user"]
        return users[-1] if users else self.messages[-1]["content"]


def _bad(param: str, message: str) -> ApiError:
    return ApiError(400, f"'{param}' {message}", param, "invalid_value")


def _number(body: dict, name: str, default, low: float, high: float, integer: bool = False):
    value = body.get(name, default)
    if value is None:
        return default
    wanted = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise _bad(name, f"must be {wanted} from {low:g} to {high:g}, not {type(value).__name__} {value!r}.")
    if not low <= value <= high:
        raise _bad(name, f"must be from {low:g} to {high:g}, not {value!r}.")
    return value


def _flag(body: dict, name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _bad(name, f"must be true or false, not {value!r}.")
    return value


def _content(value, where: str) -> str:
    """A message's content: a string, or OpenAI's list of parts of which only text parts are supported."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for i, part in enumerate(value):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise _bad(f"{where}[{i}]", "must be a text part {\"type\": \"text\", \"text\": \"...\"}; "
                                            "this model reads text only.")
            texts.append(part["text"])
        return "".join(texts)
    raise _bad(where, f"must be a string, not {type(value).__name__}.")


def _messages(value) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise _bad("messages", "must be a non-empty list of {\"role\", \"content\"} objects.")
    messages = []
    for i, message in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _bad(where, "must be an object with 'role' and 'content'.")
        role = "system" if message.get("role") == "developer" else message.get("role")
        if role not in ROLES:
            raise _bad(f"{where}.role", f"must be one of {', '.join(ROLES)}, not {message.get('role')!r}.")
        if "content" not in message or message["content"] is None:
            raise _bad(f"{where}.content", "is missing.")
        messages.append({"role": role, "content": _content(message["content"], f"{where}.content")})
    return messages


def _stop(value) -> list[str]:
    if value is None:
        return []
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or len(stops) > 4 or not all(isinstance(s, str) and s for s in stops):
        raise _bad("stop", "must be a non-empty string or a list of up to 4 of them.")
    return stops


def parse_request(body, chat: bool) -> CompletionRequest:
    """A validated request from a decoded JSON body (of /v1/chat/completions when `chat`, else /v1/completions)."""
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.", None, "invalid_json")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise _bad("model", f"must name the answerer: '{AUTO}' (the router), '{BASE}', an adapter or a+b; "
                            "GET /v1/models lists them.")
    request = CompletionRequest(model=model.strip())
    if chat:
        if "messages" not in body:
            raise _bad("messages", "is missing.")
        request.messages = _messages(body["messages"])
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str) or not prompt:
            raise _bad("prompt", "must be a non-empty string.")
        request.prompt = prompt
    tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    request.max_tokens = _number({"max_tokens": tokens}, "max_tokens", 256, 1, 1_000_000, integer=True)
    request.temperature = float(_number(body, "temperature", 0.0, 0, 2))
    request.top_p = float(_number(body, "top_p", 1.0, 0.0, 1))
    if request.top_p <= 0:
        raise _bad("top_p", "must be above 0.")
    request.stop = _stop(body.get("stop"))
    request.seed = _number(body, "seed", None, -(2**63), 2**63 - 1, integer=True)
    request.n = _number(body, "n", 1, 1, MAX_N, integer=True)
    request.stream = _flag(body, "stream")
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise _bad("stream_options", "must be an object such as {\"include_usage\": true}.")
        request.include_usage = _flag(options, "include_usage")
    request.reread = _flag(body, "reread")
    request.votes = _number(body, "votes", 1, 1, MAX_VOTES, integer=True)
    request.ensemble = _flag(body, "ensemble")
    if (request.votes > 1 or request.ensemble or request.reread) and not chat:
        name = "votes" if request.votes > 1 else "ensemble" if request.ensemble else "reread"
        raise _bad(name, "works on chat questions: use /v1/chat/completions.")
    if (request.votes > 1 or request.ensemble) and request.n > 1:
        raise _bad("n", "must be 1 with votes or ensemble: the vote returns one answer.")
    if request.reread:
        last = request.messages[-1]
        if last["role"] == "user":
            request.messages[-1] = user_turn(last["content"], True)
    return request


@dataclass
class Answerer:
    """Who answers a request and why: chat's footer, as JSON and as response headers."""

    requested: str
    adapter: str | None
    domain: str | None
    confidence: float | None
    router: str | None
    note: str
    chain: list[dict] = field(default_factory=list)  # the router's fallback chain, step by step

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def headers(self) -> dict[str, str]:
        headers = {"X-Locomlx-Adapter": self.adapter or "none", "X-Locomlx-Domain": self.domain or ""}
        if self.confidence is not None:
            headers["X-Locomlx-Confidence"] = f"{self.confidence:.4f}"
        if self.note:
            headers["X-Locomlx-Route"] = self.note.encode("ascii", "replace").decode()
        return headers


@dataclass(frozen=True)
class FeedbackRequest:
    """A body of POST /v1/feedback: a verdict on one earlier response, by its id."""

    response_id: str
    verdict: str  # good | bad | wrong
    domain: str | None  # the right domain, for `wrong`
    index: int  # which choice of the response


def parse_feedback(body) -> FeedbackRequest:
    if not isinstance(body, dict):
        raise ApiError(400, "The body must be a JSON object: {\"id\": RESPONSE_ID, \"verdict\": \"good\"|\"bad\"|"
                            "\"wrong\", \"domain\": DOMAIN (for wrong)}.", None, "invalid_value")
    rid = body.get("id")
    if not isinstance(rid, str) or not rid:
        raise _bad("id", "must be the id of a response of this server (its `id` field, e.g. chatcmpl-...).")
    verdict = body.get("verdict")
    if verdict not in ("good", "bad", "wrong"):
        raise _bad("verdict", f"must be 'good', 'bad' or 'wrong', not {verdict!r}.")
    domain = body.get("domain")
    if verdict == "wrong" and (not isinstance(domain, str) or not domain):
        raise _bad("domain", "must name the domain that should have answered when the verdict is 'wrong' "
                             "('general' = the base model).")
    if verdict != "wrong" and domain is not None:
        raise _bad("domain", "is only for the verdict 'wrong'.")
    index = body.get("index", 0)
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise _bad("index", "must be the choice's index, an integer >= 0 (default 0).")
    return FeedbackRequest(rid, verdict, domain, index)


def new_id(chat: bool) -> str:
    return ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _choice(chat: bool, index: int, text: str, finish: str | None, delta: bool) -> dict:
    if not chat:
        return {"index": index, "text": text, "logprobs": None, "finish_reason": finish}
    if delta:
        return {"index": index, "delta": {"content": text} if text or finish is None else {},
                "logprobs": None, "finish_reason": finish}
    return {"index": index, "message": {"role": "assistant", "content": text}, "logprobs": None,
            "finish_reason": finish}


def response_body(request: CompletionRequest, rid: str, texts: list[str], finishes: list[str],
                  used: dict, answerer: Answerer) -> dict:
    """The whole (non-streamed) response."""
    return {"id": rid, "object": "chat.completion" if request.chat else "text_completion",
            "created": int(time.time()), "model": request.model,
            "choices": [_choice(request.chat, i, t, f, False) for i, (t, f) in enumerate(zip(texts, finishes))],
            "usage": used, "locomlx": answerer.to_dict()}


def chunk_body(request: CompletionRequest, rid: str, index: int | None, text: str, finish: str | None,
               answerer: Answerer, used: dict | None = None, role: bool = False) -> dict:
    """One server-sent event of a stream; `index` None is the closing usage chunk (no choices)."""
    choices = []
    if index is not None:
        choice = _choice(request.chat, index, text, finish, True)
        if role and request.chat:
            choice["delta"] = {"role": "assistant", **choice["delta"]}
        choices.append(choice)
    body = {"id": rid, "object": "chat.completion.chunk" if request.chat else "text_completion",
            "created": int(time.time()), "model": request.model, "choices": choices, "locomlx": answerer.to_dict()}
    if used is not None or request.include_usage:
        body["usage"] = used
    return body
