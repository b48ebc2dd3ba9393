"""A loopback stand-in for a Hugging Face Inference Endpoint running TGI, scriptable per test."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import json as jsonlib
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Self

from aiohttp import web
from multidict import CIMultiDictProxy

CHAT = "/v1/chat/completions"
CHARS_PER_TOKEN = 4  # crude tokenizer: usage, length limits and token budgets all count this way

Responder = Callable[[dict[str, Any]], str | Awaitable[str]]
FaultKind = Literal["status", "hang", "delay", "drop", "echo_headers"]
_Handler = Callable[[web.Request, Any], Awaitable[web.StreamResponse]]
_UNSET: Any = object()


@dataclass(frozen=True)
class Fault:
    """One scripted misbehaviour, consumed by one request."""

    kind: FaultKind
    status: int = 200
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def status(
    code: int,
    *,
    json: Any = _UNSET,
    text: str | None = None,
    body: bytes | None = None,
    content_type: str | None = None,
    headers: dict[str, str] | None = None,
) -> Fault:
    """Answer with this status and a JSON, text or raw body instead of the normal answer."""
    if json is not _UNSET:
        raw, ctype = jsonlib.dumps(json).encode(), "application/json"
    elif text is not None:
        raw, ctype = text.encode(), "text/plain"
    else:
        raw, ctype = body or b"", None
    return Fault("status", code, raw, content_type or ctype, dict(headers or {}))


def loading(estimated_time: float | None = 20.0) -> Fault:
    """503 of an endpoint whose replica is starting (legacy body with estimated_time)."""
    payload: dict[str, Any] = {"error": "Model is currently loading"}
    if estimated_time is not None:
        payload["estimated_time"] = estimated_time
    return status(503, json=payload)


def overloaded(retry_after: int | None = 2) -> Fault:
    """429 back-pressure answer, optionally with a Retry-After header."""
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    return status(
        429, json={"error": "Model is overloaded", "error_type": "overloaded"}, headers=headers
    )


def unauthorized() -> Fault:
    """401 as sent for a bad token."""
    return status(401, json={"error": "Invalid credentials in Authorization header"})


def not_found() -> Fault:
    """404 with a plain-text body."""
    return status(404, text="Not Found")


def bad_gateway() -> Fault:
    """502 with an HTML body, as a proxy in front of the endpoint sends it."""
    html = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
    return status(502, body=html, content_type="text/html")


def bad_json(body: str = '{"choices": [') -> Fault:
    """200 application/json whose body is not valid JSON."""
    return status(200, body=body.encode(), content_type="application/json")


def hang() -> Fault:
    """Never answer; the connection is dropped when the server closes."""
    return Fault("hang")


def delay(seconds: float) -> Fault:
    """Wait, then answer normally."""
    return Fault("delay", seconds=seconds)


def drop() -> Fault:
    """Close the connection without sending any answer."""
    return Fault("drop")


def echo_headers(code: int = 500) -> Fault:
    """Error answer whose JSON body reflects the request headers (to test tokens never leak)."""
    return Fault("echo_headers", code)


@dataclass
class StreamOptions:
    """How streamed answers are framed, paced and broken."""

    chunk_size: int = 4  # characters per chunk, so boundaries fall mid-word
    chunk_delay: float = 0.0
    space: bool = False  # "data: {" instead of axum's "data:{"
    keepalive: bool = False  # a ":" comment line before every event
    first: Literal["none", "empty", "null", "missing"] = "none"  # extra leading chat chunk
    done: bool = True  # chat only; /generate_stream never sends [DONE]
    usage: bool | None = None  # None follows the request's stream_options.include_usage
    break_after: int | None = None  # close the connection after this many text chunks
    error_after: int | None = None  # send an in-stream error after this many text chunks
    error_message: str = "Request failed during generation: Server error: CUDA out of memory"


@dataclass(frozen=True)
class Recorded:
    """One request as the server received it."""

    method: str
    path: str
    headers: CIMultiDictProxy[str]
    json: Any
    body: bytes
    time: float


class _Rejected(Exception):
    """Carries the error answer of a request the validation refused."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def _json(code: int, payload: Any, headers: dict[str, str] | None = None) -> web.Response:
    # Exactly "application/json" like TGI; json_response would add "; charset=utf-8".
    return web.Response(
        status=code,
        body=jsonlib.dumps(payload).encode(),
        content_type="application/json",
        headers=headers,
    )


def _invalid(message: str) -> _Rejected:
    return _Rejected(
        _json(422, {"error": f"Input validation error: {message}", "error_type": "validation"})
    )


def _undeserializable(message: str) -> _Rejected:
    # axum's Json extractor refuses wrong shapes itself: 422 in plain text, not TGI's JSON.
    text = f"Failed to deserialize the JSON body into the target type: {message}"
    return _Rejected(web.Response(status=422, text=text))


def count_tokens(text: str) -> int:
    """Token count of a text under the fake's tokenizer."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def _number(params: dict[str, Any], name: str) -> float | None:
    value = params.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _undeserializable(f"{name}: invalid type: expected f32")
    return float(value)


def _stop_cut(text: str, stops: list[str]) -> str | None:
    ends = [text.find(s) + len(s) for s in stops if s and s in text]
    return text[: min(ends)] if ends else None


def _full_text(params: dict[str, Any], default: bool) -> bool:
    value = params.get("return_full_text")
    return default if value is None else bool(value)


class FakeHF:
    """A real aiohttp server on 127.0.0.1 answering like a TGI Inference Endpoint."""

    def __init__(
        self,
        reply: str = "Hello from the fake endpoint.",
        *,
        token: str | None = None,
        model_id: str = "meta-llama/Llama-3.2-3B-Instruct",
        latency: float = 0.0,
        stream: StreamOptions | None = None,
        root_format: Literal["list", "dict", "text"] = "list",
        max_input_tokens: int = 4095,
        max_total_tokens: int = 4096,
        max_concurrent_requests: int = 128,
    ) -> None:
        """Configure the fake; nothing listens until start()."""
        self.reply = reply
        self.responder: Responder | None = None
        self.replies: deque[str] = deque()
        self.token = token
        self.model_id = model_id
        self.latency = latency
        self.stream = stream or StreamOptions()
        self.root_format = root_format
        self.max_input_tokens = max_input_tokens
        self.max_total_tokens = max_total_tokens
        self.max_concurrent_requests = max_concurrent_requests
        self.requests: list[Recorded] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._faults: list[tuple[str | None, Fault]] = []
        self._changed = asyncio.Condition()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._routes: dict[str, tuple[str, _Handler]] = {
            CHAT: ("POST", self._chat),
            "/": ("POST", functools.partial(self._text, root=True)),
            "/generate": ("POST", functools.partial(self._text, root=False)),
            "/generate_stream": ("POST", functools.partial(self._generate_stream, root=False)),
            "/health": ("GET", self._health),
            "/info": ("GET", self._info),
        }

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:PORT."""
        if self._runner is None:
            raise RuntimeError("FakeHF is not started")
        return f"http://127.0.0.1:{self._port}"

    async def start(self) -> Self:
        """Bind to a free port on 127.0.0.1 and start serving."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # Hung handlers return as soon as close() sets _closing; the short timeout is a backstop.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        """Release hung requests and stop the server."""
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def queue_replies(self, *texts: str) -> None:
        """Answer the next generation requests with these texts, in order."""
        self.replies.extend(texts)

    def hold(
        self, answer: str | Callable[[dict[str, Any]], str], *, only: str | None = None
    ) -> asyncio.Event:
        """Hold requests until the returned event is set, then answer them.

        With `only`, just the requests whose last message is that text are held. `answer`
        is the reply text, or a function of the request body.
        """
        release = asyncio.Event()

        async def responder(body: dict[str, Any]) -> str:
            if only is None or body["messages"][-1]["content"] == only:
                await release.wait()
            return answer(body) if callable(answer) else answer

        self.responder = responder
        return release

    def add_faults(self, *faults: Fault, path: str | None = None) -> None:
        """Queue faults, consumed one per request (only by requests to path when given)."""
        self._faults.extend((path, f) for f in faults)

    @property
    def pending_faults(self) -> list[Fault]:
        """Faults not consumed yet."""
        return [f for _, f in self._faults]

    def requests_to(self, path: str) -> list[Recorded]:
        """Recorded requests whose path is path."""
        return [r for r in self.requests if r.path == path]

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until predicate() holds; re-checked on every request start and end."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout)

    async def wait_for_requests(
        self, n: int, *, path: str | None = None, timeout: float = 5.0
    ) -> list[Recorded]:
        """Wait until at least n requests (to path when given) arrived; return them."""

        def seen() -> list[Recorded]:
            return self.requests if path is None else self.requests_to(path)

        await self.wait_until(lambda: len(seen()) >= n, timeout)
        return seen()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _sleep(self, seconds: float) -> None:
        # Interruptible so close() never waits on a scripted delay.
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), seconds)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            parsed = jsonlib.loads(body) if body else None
        except ValueError:
            parsed = None
        self.requests.append(
            Recorded(request.method, request.path, request.headers, parsed, body, time.monotonic())
        )
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        await self._notify()
        try:
            return await self._respond(request, parsed)
        except _Rejected as rejected:
            return rejected.response
        finally:
            self.in_flight -= 1
            await self._notify()

    async def _respond(self, request: web.Request, payload: Any) -> web.StreamResponse:
        if self.token is not None and request.headers.get("Authorization") != (
            f"Bearer {self.token}"
        ):
            return await self._apply(request, unauthorized())
        fault = next((f for f in self._faults if f[0] in (None, request.path)), None)
        if fault is not None:
            self._faults.remove(fault)
            if fault[1].kind != "delay":
                return await self._apply(request, fault[1])
            await self._sleep(fault[1].seconds)
        await self._sleep(self.latency)
        route = self._routes.get(request.path)
        if route is None:
            return web.Response(status=404)
        method, handler = route
        if request.method != method:
            return web.Response(status=405)
        if method == "POST":
            if request.content_type != "application/json":
                text = "Expected request with `Content-Type: application/json`"
                return web.Response(status=415, text=text)
            if not isinstance(payload, dict):
                return web.Response(status=400, text="Failed to parse the request body as JSON")
            if self.in_flight > self.max_concurrent_requests:
                return _json(429, {"error": "Model is overloaded", "error_type": "overloaded"})
        return await handler(request, payload)

    async def _apply(self, request: web.Request, fault: Fault) -> web.StreamResponse:
        if fault.kind == "hang":
            await self._closing.wait()
        if fault.kind in ("hang", "drop"):
            assert request.transport is not None
            request.transport.close()
            return web.Response()  # never sent: aiohttp ignores the write to a closed transport
        if fault.kind == "echo_headers":
            payload = {"error": "Upstream error", "request_headers": dict(request.headers)}
            return _json(fault.status, payload)
        resp = web.Response(status=fault.status, body=fault.body, headers=fault.headers)
        if fault.content_type:
            resp.content_type = fault.content_type
        return resp

    async def _next_reply(self, payload: dict[str, Any]) -> str:
        if self.replies:
            return self.replies.popleft()
        if self.responder is None:
            return self.reply
        answer = self.responder(payload)
        return await answer if inspect.isawaitable(answer) else answer

    def _check(
        self, params: dict[str, Any], prompt: str, *, chat: bool
    ) -> tuple[int, list[str], int]:
        """Validate like TGI; return (max new tokens, stop sequences, prompt tokens)."""
        temperature = _number(params, "temperature")
        # The chat API maps temperature 0 to greedy decoding; /generate refuses it.
        if temperature is not None and (temperature < 0 if chat else temperature <= 0):
            raise _invalid("`temperature` must be strictly positive")
        top_p = _number(params, "top_p")
        if top_p is not None and not 0 < top_p < 1:
            raise _invalid("`top_p` must be > 0.0 and < 1.0")
        name = "max_tokens" if chat else "max_new_tokens"
        max_new = params.get(name)
        if max_new is not None and (isinstance(max_new, bool) or not isinstance(max_new, int)):
            raise _undeserializable(f"{name}: invalid type: expected u32")
        if max_new is not None and max_new <= 0:
            raise _invalid("`max_new_tokens` must be strictly positive")
        stop = params.get("stop") or []
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise _undeserializable("stop: invalid type: expected a sequence of strings")
        if len(stop) > 4:
            raise _invalid(f"`stop` supports up to 4 stop sequences. Given: {len(stop)}")
        n_in = count_tokens(prompt)
        if n_in > self.max_input_tokens:
            raise _invalid(
                f"`inputs` must have less than {self.max_input_tokens} tokens. Given: {n_in}"
            )
        if max_new is None:
            max_new = self.max_total_tokens - n_in
        if n_in + max_new > self.max_total_tokens:
            raise _invalid(
                f"`inputs` tokens + `max_new_tokens` must be <= {self.max_total_tokens}. "
                f"Given: {n_in} `inputs` tokens and {max_new} `max_new_tokens`"
            )
        return max_new, stop, n_in

    async def _generate(
        self, payload: dict[str, Any], max_new: int, stop: list[str]
    ) -> tuple[str, str]:
        """Scripted text cut like TGI: keep the stop sequence, honour the token limit."""
        text = await self._next_reply(payload)
        finish = "eos_token"
        cut = _stop_cut(text, stop)
        if cut is not None:
            text, finish = cut, "stop_sequence"
        if count_tokens(text) > max_new:
            text, finish = text[: max_new * CHARS_PER_TOKEN], "length"
        return text, finish

    def _chunks(self, text: str) -> list[str]:
        size = max(1, self.stream.chunk_size)
        return [text[i : i + size] for i in range(0, len(text), size)]

    async def _sse_open(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        return resp

    async def _sse_send(self, resp: web.StreamResponse, data: Any) -> None:
        line = data if isinstance(data, str) else jsonlib.dumps(data)
        prefix = "data: " if self.stream.space else "data:"
        keepalive = ":\n\n" if self.stream.keepalive else ""
        await resp.write(f"{keepalive}{prefix}{line}\n\n".encode())

    async def _chat(self, request: web.Request, payload: dict[str, Any]) -> web.StreamResponse:
        messages = payload.get("messages")
        if not isinstance(messages, list):
            raise _undeserializable("missing field `messages`")
        for m in messages:
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise _undeserializable("messages: missing field `role`")
            if not isinstance(m.get("content"), str | list):
                raise _undeserializable("messages: invalid type for `content`")
        if not messages:
            raise _invalid("`messages` cannot be empty")
        prompt = "".join(f"<|{m['role']}|>{m['content']}<|eot_id|>" for m in messages)
        max_new, stop, n_in = self._check(payload, prompt, chat=True)
        text, finish = await self._generate(payload, max_new, stop)
        reason = "length" if finish == "length" else "stop"
        usage = {
            "prompt_tokens": n_in,
            "completion_tokens": count_tokens(text),
            "total_tokens": n_in + count_tokens(text),
        }
        base = {
            "id": "",  # TGI leaves the id empty
            "created": int(time.time()),
            "model": self.model_id,
            "system_fingerprint": "3.3.6-sha-5f6c1a2",
        }
        if not payload.get("stream"):
            message = {"role": "assistant", "content": text}
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": reason}
            return _json(
                200, {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
            )

        def chunk(delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return {**base, "object": "chat.completion.chunk", "choices": [choice], "usage": None}

        opts = self.stream
        resp = await self._sse_open(request)
        if opts.first != "none":
            lead: dict[str, Any] = {"role": "assistant"}
            if opts.first != "missing":
                lead["content"] = "" if opts.first == "empty" else None
            await self._sse_send(resp, chunk(lead, None))
        for i, piece in enumerate(self._chunks(text)):
            if i == opts.break_after:
                return self._break(request, resp)
            if i == opts.error_after:
                error = {"message": opts.error_message, "http_status_code": 422}
                await self._sse_send(resp, {"error": error})
                return resp
            await self._sleep(opts.chunk_delay)
            await self._sse_send(resp, chunk({"role": "assistant", "content": piece}, None))
        await self._sse_send(resp, chunk({"role": "assistant", "content": ""}, reason))
        include_usage = (payload.get("stream_options") or {}).get("include_usage", False)
        if opts.usage if opts.usage is not None else include_usage:
            await self._sse_send(
                resp, {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}
            )
        if opts.done:
            await self._sse_send(resp, "[DONE]")
        return resp

    def _break(self, request: web.Request, resp: web.StreamResponse) -> web.StreamResponse:
        # Closing the transport mid-body leaves the chunked encoding unterminated.
        assert request.transport is not None
        request.transport.close()
        return resp

    def _text_request(
        self, payload: dict[str, Any]
    ) -> tuple[str, dict[str, Any], int, list[str], int]:
        inputs = payload.get("inputs")
        if not isinstance(inputs, str):
            raise _undeserializable("missing field `inputs`")
        params = payload.get("parameters") or {}
        if not isinstance(params, dict):
            raise _undeserializable("parameters: invalid type: expected struct")
        if not inputs:
            raise _invalid("`inputs` cannot be empty")
        max_new, stop, n_in = self._check(params, inputs, chat=False)
        return inputs, params, max_new, stop, n_in

    async def _text(
        self, request: web.Request, payload: dict[str, Any], *, root: bool
    ) -> web.StreamResponse:
        if root and payload.get("stream"):
            return await self._generate_stream(request, payload, root=True)
        inputs, params, max_new, stop, _ = self._text_request(payload)
        generated, finish = await self._generate(payload, max_new, stop)
        # return_full_text defaults to true on / only.
        text = inputs + generated if _full_text(params, root) else generated
        out: dict[str, Any] = {"generated_text": text}
        if params.get("details"):
            out["details"] = {
                "finish_reason": finish,
                "generated_tokens": count_tokens(generated),
                "seed": None,
                "prefill": [],
                "tokens": [],
            }
        if not root:
            return _json(200, out)
        return _json(200, {"list": [out], "dict": out, "text": text}[self.root_format])

    async def _generate_stream(
        self, request: web.Request, payload: dict[str, Any], *, root: bool
    ) -> web.StreamResponse:
        inputs, params, max_new, stop, n_in = self._text_request(payload)
        text, finish = await self._generate(payload, max_new, stop)
        full = inputs + text if _full_text(params, root) else text
        tokens = [(t, False) for t in self._chunks(text)]
        if finish == "eos_token" or not tokens:
            tokens.append(("<|eot_id|>", True))
        details = {
            "finish_reason": finish,
            "generated_tokens": len(tokens),
            "seed": None,
            "input_length": n_in,
        }
        opts = self.stream
        resp = await self._sse_open(request)
        for i, (piece, special) in enumerate(tokens):
            if i == opts.break_after:
                return self._break(request, resp)
            if i == opts.error_after:
                error = {"error": opts.error_message, "error_type": "generation"}
                await self._sse_send(resp, error)
                return resp
            await self._sleep(opts.chunk_delay)
            last = i == len(tokens) - 1
            token = {"id": 1000 + i, "text": piece, "logprob": -0.25, "special": special}
            event = {
                "index": i + 1,
                "token": token,
                "generated_text": full if last else None,
                "details": details if last and params.get("details") else None,
            }
            await self._sse_send(resp, event)
        return resp

    async def _health(self, request: web.Request, payload: Any) -> web.StreamResponse:
        return web.Response(status=200)

    async def _info(self, request: web.Request, payload: Any) -> web.StreamResponse:
        return _json(
            200,
            {
                "model_id": self.model_id,
                "model_sha": "0cb88a4f764b7a12671c53f0838cd831a0843b95",
                "model_pipeline_tag": "text-generation",
                "max_concurrent_requests": self.max_concurrent_requests,
                "max_best_of": 2,
                "max_stop_sequences": 4,
                "max_input_tokens": self.max_input_tokens,
                "max_total_tokens": self.max_total_tokens,
                "validation_workers": 2,
                "max_client_batch_size": 4,
                "router": "text-generation-router",
                "version": "3.3.6",
                "sha": "5f6c1a2",
                "docker_label": "sha-5f6c1a2",
            },
        )
