"""Calls to Hugging Face endpoints: the chat-completions and text-generation APIs.

Every failure becomes an `InferenceError` subclass whose `str()` is safe to show to users:
it names the model and what to do, and never carries a token or a raw response body.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal, TypedDict, TypeVar

import aiohttp
import aiohttp.http_exceptions

from bot.config import ModelSpec
from bot.streaming import (
    Piece,
    StopFilter,
    StreamFailed,
    ThinkFilter,
    chat_event,
    sse_data,
    text_event,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
ChatRole = Literal["system", "user", "assistant"]

# The old app's prompt format; the model must not write the next user turn itself.
USER_PREFIX = "User:"
ASSISTANT_PREFIX = "Assistant:"
TEXT_STOP = "\n" + USER_PREFIX
# How much of an endpoint's own error message is worth showing.
MAX_DETAIL = 200
# Parameters the OpenAI-compatible API understands, by their name there.
_CHAT_PARAMETERS = {
    "max_new_tokens": "max_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "frequency_penalty": "frequency_penalty",
    "presence_penalty": "presence_penalty",
    "seed": "seed",
    "stop": "stop",
}
# Anything shaped like a credential, in case an endpoint echoes request headers.
_CREDENTIAL = re.compile(r"(?i)(bearer\s+\S+|hf_[a-z0-9]{8,})")
_HTML = re.compile(r"^\s*<(!doctype|html|head|body)", re.IGNORECASE)


class ChatMessage(TypedDict):
    """One message of a chat-completions conversation."""

    role: ChatRole
    content: str


@dataclass(frozen=True)
class Completion:
    """A model's answer and what it cost."""

    text: str
    model: str
    latency: float
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    retries: int = 0


class InferenceError(Exception):
    """A model call that failed; `str()` is a short message fit for users."""

    what: ClassVar[str] = "failed"
    hint: ClassVar[str] = "Try again in a moment."

    def __init__(self, model: str, detail: str = "", *, status: int | None = None) -> None:
        self.model = model
        self.detail = detail
        self.status = status
        # The catalogue name, for log lines; set by InferenceClient.complete.
        self.model_name: str | None = None
        super().__init__(self.user_message())

    def user_message(self) -> str:
        """One or two sentences: which model, what went wrong, what to do."""
        detail = f" ({self.detail})" if self.detail else ""
        return f"**{self.model}** {self.what}{detail}. {self.hint}"


class NotConfigured(InferenceError):
    """The model has no endpoint."""

    what = "has no endpoint configured"
    hint = "Ask the bot's operator to set one, or pick another model with `/model set`."


class ModelLoading(InferenceError):
    """A scaled-to-zero endpoint is starting (502/503/504)."""

    what = "is starting up"
    hint = "Scaled-to-zero endpoints take a minute or two to wake: try again shortly."

    def __init__(
        self, model: str, detail: str = "", *, status: int | None = None, eta: float | None = None
    ) -> None:
        self.eta = eta
        super().__init__(model, detail, status=status)


class RateLimited(InferenceError):
    """The endpoint is overloaded or the account's quota is used up (429)."""

    what = "is busy right now"
    hint = "Wait a few seconds and try again."

    def __init__(
        self,
        model: str,
        detail: str = "",
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(model, detail, status=status)


class Unauthorized(InferenceError):
    """The token was refused (401/403)."""

    what = "refused the bot's Hugging Face token"
    hint = "The bot's operator should check HUGGINGFACE_API_TOKEN."


class ModelNotFound(InferenceError):
    """Nothing answers at the endpoint URL (404/405)."""

    what = "was not found at its endpoint"
    hint = "The endpoint URL may be wrong, or the endpoint deleted; the operator should check it."


class BadRequest(InferenceError):
    """The endpoint rejected the request (400/413/422), often a context that is too long."""

    what = "could not take this request"
    hint = "If the conversation is long, `/reset` starts it afresh."


class EndpointError(InferenceError):
    """The endpoint failed (5xx) or answered something unreadable."""

    what = "had a problem answering"
    hint = "Try again in a moment."


class WrongApiStyle(EndpointError):
    """The endpoint answered in a shape that belongs to the other API style."""

    what = "answered in an unexpected format"
    hint = "The operator may need to switch the model's `api` between 'chat' and 'text'."


class EmptyAnswer(EndpointError):
    """The model produced no text."""

    what = "returned an empty answer"
    hint = "Try rephrasing your message."


class Timeout(InferenceError):
    """The endpoint did not answer in time."""

    what = "took too long to answer"
    hint = "Try again in a moment."


class StreamInterrupted(InferenceError):
    """A streamed answer broke off after it had started."""

    what = "stopped answering midway"
    hint = "The answer is incomplete; ask again to get a whole one."


class Unreachable(InferenceError):
    """The endpoint could not be connected to."""

    what = "could not be reached"
    hint = "The endpoint may be down; try again later."


def chat_url(endpoint: str) -> str:
    """The chat-completions URL for an endpoint, whether given as base, /v1 or full URL."""
    base = endpoint.rstrip("/")
    if base.endswith("/chat/completions"):
        return base
    if base.endswith("/v1"):
        return base + "/chat/completions"
    return base + "/v1/chat/completions"


def chat_payload(spec: ModelSpec, messages: Sequence[ChatMessage]) -> dict[str, Any]:
    """The OpenAI-compatible request body."""
    payload: dict[str, Any] = {"model": spec.hub_id, "messages": list(messages)}
    for key, value in spec.parameters.items():
        if key in _CHAT_PARAMETERS and not (key == "stop" and not value):
            payload[_CHAT_PARAMETERS[key]] = list(value) if key == "stop" else value
    return payload


def text_prompt(messages: Sequence[ChatMessage]) -> str:
    """The old app's `User:`/`Assistant:` prompt, with the system prompt on top."""
    lines = []
    for message in messages:
        if message["role"] == "system":
            lines.append(message["content"] + "\n")
        elif message["role"] == "user":
            lines.append(f"{USER_PREFIX} {message['content']}")
        else:
            lines.append(f"{ASSISTANT_PREFIX} {message['content']}")
    lines.append(ASSISTANT_PREFIX)
    return "\n".join(lines)


def text_stops(spec: ModelSpec) -> list[str]:
    """Stop sequences for the text API: the next user turn, plus the model's own."""
    return [TEXT_STOP, *spec.stop]


def text_payload(spec: ModelSpec, messages: Sequence[ChatMessage]) -> dict[str, Any]:
    """The brief's text-generation request body, with stop sequences."""
    parameters = {key: value for key, value in spec.parameters.items() if key != "stop"}
    parameters["return_full_text"] = False
    parameters["stop"] = text_stops(spec)
    return {"inputs": text_prompt(messages), "parameters": parameters}


def strip_stops(text: str, stops: Sequence[str]) -> str:
    """Text cut at the first stop sequence (TGI leaves it in the answer)."""
    # The streaming filter, fed at once: both paths cut answers the same way.
    stop = StopFilter(stops)
    return stop.feed(text) + stop.flush()


def strip_reasoning(text: str) -> str:
    """Text without `<think>...</think>` blocks (an unclosed one runs to the end)."""
    think = ThinkFilter()
    return "".join(p.text for p in [*think.feed(text), *think.flush()] if p.kind == "text")


def parse_chat(data: Any, model: str) -> tuple[str, dict[str, Any]]:
    """The answer text and usage from a chat-completions response."""
    try:
        choice = data["choices"][0]
        content = choice["message"].get("content")
    except (KeyError, IndexError, TypeError, AttributeError):
        raise WrongApiStyle(model, "no choices in the answer") from None
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return (content if isinstance(content, str) else ""), usage


def parse_text(data: Any, stops: Sequence[str]) -> str:
    """The answer from a text-generation response: a list, a dict, or anything else."""
    if isinstance(data, list) and data:
        first = data[0]
        text = first.get("generated_text", "") if isinstance(first, dict) else str(first)
    elif isinstance(data, dict):
        text = data.get("generated_text", "")
    else:
        text = "" if data is None else str(data)
    if not isinstance(text, str):
        text = str(text)
    return strip_stops(text, stops)


def redact(message: str, secrets: Sequence[str] = ()) -> str:
    """An endpoint's message made safe to show: no secrets, one line, short."""
    for secret in secrets:
        if secret:
            message = message.replace(secret, "[redacted]")
    message = _CREDENTIAL.sub("[redacted]", " ".join(message.split()))
    if len(message) > MAX_DETAIL:
        message = message[: MAX_DETAIL - 1] + "…"
    return message


def error_detail(body: bytes, secrets: Sequence[str] = ()) -> str:
    """The endpoint's own error message, if it gave one in JSON, short and redacted."""
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    found: Any = data.get("error") if isinstance(data, dict) else None
    if isinstance(found, dict):
        found = found.get("message")
    return redact(found, secrets) if isinstance(found, str) else ""


def _seconds(value: Any) -> float | None:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if 0 <= seconds < 24 * 3600 else None


def error_for_status(
    model: str,
    status: int,
    body: bytes,
    headers: Mapping[str, str],
    secrets: Sequence[str] = (),
) -> InferenceError:
    """The typed error for an HTTP error answer."""
    detail = error_detail(body, secrets)
    if status in (502, 503, 504):
        try:
            eta = _seconds(json.loads(body).get("estimated_time"))
        except (ValueError, AttributeError):
            eta = None
        return ModelLoading(model, status=status, eta=eta)
    if status == 429:
        return RateLimited(model, status=status, retry_after=_seconds(headers.get("Retry-After")))
    if status in (401, 403):
        return Unauthorized(model, status=status)
    if status in (404, 405):
        return ModelNotFound(model, status=status)
    if status in (400, 413, 422):
        return BadRequest(model, detail, status=status)
    return EndpointError(model, f"HTTP {status}", status=status)


# Transient failures worth another try: cold starts, overload, network trouble, read timeouts.
RETRYABLE = (ModelLoading, RateLimited, Unreachable, Timeout)
RetryHook = Callable[[InferenceError, int, float], Awaitable[None]]


@dataclass(frozen=True)
class RetryPolicy:
    """How long one reply may take in all, and how to space the attempts."""

    deadline: float = 120.0
    base_delay: float = 1.0
    max_delay: float = 20.0
    max_attempts: int = 20


def retry_delay(
    error: InferenceError, attempt: int, policy: RetryPolicy, rand: Callable[[], float]
) -> float:
    """Seconds to wait before attempt+1: the endpoint's hint if any, else jittered back-off."""
    hint: float | None = None
    if isinstance(error, RateLimited):
        hint = error.retry_after
    elif isinstance(error, ModelLoading):
        hint = error.eta
    if hint is not None:
        # A little jitter so that many waiting channels don't all return at the same instant.
        return min(hint, policy.max_delay) * (1 + rand() / 10)
    backoff = min(policy.max_delay, policy.base_delay * 2.0 ** (attempt - 1))
    return backoff * (0.5 + rand() / 2)


class InferenceClient:
    """Calls models over one shared aiohttp session, retrying transient failures."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        token: str | None,
        *,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        max_concurrency: int = 4,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._session = session
        self._token = token
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.max_concurrency = max_concurrency
        self._sleep = sleep
        self._rand = rand
        # Requests in flight per endpoint: a burst across channels queues here.
        self._slots: dict[str, asyncio.Semaphore] = {}

    def _slot(self, endpoint: str) -> asyncio.Semaphore:
        slot = self._slots.get(endpoint)
        if slot is None:
            slot = self._slots[endpoint] = asyncio.Semaphore(self.max_concurrency)
        return slot

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    async def complete(
        self,
        spec: ModelSpec,
        messages: Sequence[ChatMessage],
        *,
        on_retry: RetryHook | None = None,
    ) -> Completion:
        """Ask a model for the next assistant message, retrying transient failures.

        Gives up with the last error once the policy's deadline would pass; on_retry is
        awaited before each wait (the chat cog uses it to say a model is warming up).
        """
        started = time.monotonic()
        with _named(spec):
            (text, usage), attempts = await self._retrying(
                spec, lambda deadline: self._attempt(spec, messages, deadline), on_retry
            )
        return Completion(
            text=text,
            model=spec.name,
            latency=time.monotonic() - started,
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            retries=attempts - 1,
        )

    async def stream(
        self,
        spec: ModelSpec,
        messages: Sequence[ChatMessage],
        *,
        on_retry: RetryHook | None = None,
    ) -> AsyncIterator[Piece]:
        """Stream the next assistant message as answer text and reasoning pieces.

        Opening the stream is retried like `complete`; once it is open nothing is retried
        (the user may already see part of the answer): a failure raises StreamInterrupted.
        The endpoint's concurrency slot is held until the stream ends.
        """
        with _named(spec):
            (response, slot), _ = await self._retrying(
                spec, lambda deadline: self._open_stream(spec, messages, deadline), on_retry
            )
            try:
                async for piece in self._pieces(spec, response):
                    yield piece
            finally:
                response.release()
                slot.release()

    async def _retrying(
        self,
        spec: ModelSpec,
        attempt: Callable[[float], Awaitable[T]],
        on_retry: RetryHook | None,
    ) -> tuple[T, int]:
        """Call attempt(deadline) until it succeeds or the policy gives up; count attempts."""
        if not spec.endpoint:
            raise NotConfigured(spec.label)
        deadline = time.monotonic() + self.retry.deadline
        attempts = 0
        while True:
            attempts += 1
            try:
                return await attempt(deadline), attempts
            except RETRYABLE as error:
                delay = retry_delay(error, attempts, self.retry, self._rand)
                if attempts >= self.retry.max_attempts or time.monotonic() + delay >= deadline:
                    raise
                log.info(
                    "Model %s: %s (HTTP %s); retry %d in %.1f s",
                    spec.name,
                    type(error).__name__,
                    error.status,
                    attempts,
                    delay,
                )
                if on_retry is not None:
                    await on_retry(error, attempts, delay)
                await self._sleep(delay)

    def _request(
        self, spec: ModelSpec, messages: Sequence[ChatMessage], *, stream: bool
    ) -> tuple[str, dict[str, Any]]:
        assert spec.endpoint
        if spec.api == "chat":
            payload = chat_payload(spec, messages)
            if stream:
                payload["stream"] = True
            return chat_url(spec.endpoint), payload
        if stream:
            return spec.endpoint.rstrip("/") + "/generate_stream", text_payload(spec, messages)
        return spec.endpoint, text_payload(spec, messages)

    async def _attempt(
        self, spec: ModelSpec, messages: Sequence[ChatMessage], deadline: float
    ) -> tuple[str, dict[str, Any]]:
        """One request, within the endpoint's concurrency cap and the reply's deadline."""
        assert spec.endpoint
        remaining = deadline - time.monotonic()
        url, payload = self._request(spec, messages, stream=False)
        try:
            async with asyncio.timeout(remaining), self._slot(spec.endpoint):
                data = await self._post(spec, url, payload, min(self.timeout, remaining))
        except TimeoutError:
            # Waiting for a free slot ate the rest of the deadline.
            raise Timeout(spec.label, f"no answer in {self.retry.deadline:g} s") from None
        return answer_text(spec, data)

    async def _open_stream(
        self, spec: ModelSpec, messages: Sequence[ChatMessage], deadline: float
    ) -> tuple[aiohttp.ClientResponse, asyncio.Semaphore]:
        """Start a streamed request: the response once its status is 200, and its slot."""
        assert spec.endpoint
        url, payload = self._request(spec, messages, stream=True)
        slot = self._slot(spec.endpoint)
        remaining = deadline - time.monotonic()
        try:
            async with asyncio.timeout(remaining):
                await slot.acquire()
        except TimeoutError:
            raise Timeout(spec.label, f"no answer in {self.retry.deadline:g} s") from None
        # Between events the endpoint may pause, but never for longer than one request may take.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=remaining, sock_read=self.timeout)
        try:
            with self._transport_errors(spec, self.timeout):
                response = await self._session.post(
                    url, json=payload, headers=self._headers(), timeout=timeout
                )
                if response.status >= 400:
                    body = await response.read()
                    response.release()
                    raise error_for_status(
                        spec.label, response.status, body, response.headers, [self._token or ""]
                    )
        except BaseException:
            slot.release()
            raise
        return response, slot

    async def _pieces(
        self, spec: ModelSpec, response: aiohttp.ClientResponse
    ) -> AsyncIterator[Piece]:
        """The filtered pieces of an open stream (or of a plain JSON answer to it)."""
        if not response.content_type.startswith("text/event-stream"):
            # The server ignored "stream": take its whole answer as one piece.
            data = _json_answer(spec, await response.read())
            yield Piece("text", answer_text(spec, data)[0])
            return
        parse = chat_event if spec.api == "chat" else text_event
        think = ThinkFilter()
        stop = StopFilter(text_stops(spec) if spec.api == "text" else [])
        shown = finished = False
        try:
            async for raw in response.content:
                data = sse_data(raw.decode("utf-8", "replace"))
                if data is None:
                    continue
                event = parse(data)
                finished = finished or event.finished
                for piece in _filtered(event.pieces, think, stop):
                    shown = shown or (piece.kind == "text" and bool(piece.text.strip()))
                    yield piece
                if event.done or stop.stopped:
                    break
        except StreamFailed as failed:
            detail = redact(failed.message, [self._token or ""]) or "an error"
            raise StreamInterrupted(spec.label, detail, status=failed.status) from None
        except TimeoutError:
            raise StreamInterrupted(spec.label, f"no data for {self.timeout:.3g} s") from None
        except aiohttp.ClientError:
            raise StreamInterrupted(spec.label, "the connection was lost") from None
        except (ValueError, aiohttp.http_exceptions.HttpProcessingError):
            # aiohttp refuses lines longer than its read buffer.
            raise StreamInterrupted(spec.label, "an event too large to read") from None
        if not finished and not stop.stopped:
            # A clean close before the answer's end: a proxy gave up, say.
            raise StreamInterrupted(spec.label, "the stream ended early")
        for piece in _filtered(think.flush(), None, stop):
            shown = shown or (piece.kind == "text" and bool(piece.text.strip()))
            yield piece
        tail = stop.flush()
        if tail:
            shown = shown or bool(tail.strip())
            yield Piece("text", tail)
        if not shown:
            raise EmptyAnswer(spec.label)

    @contextlib.contextmanager
    def _transport_errors(self, spec: ModelSpec, seconds: float) -> Iterator[None]:
        """Turn aiohttp's timeouts and connection failures into typed, user-safe errors."""
        try:
            yield
        except TimeoutError:
            raise Timeout(spec.label, f"no answer in {seconds:.3g} s") from None
        except aiohttp.ClientError as exc:
            log.warning(
                "Model %s: connection to %s failed: %s",
                spec.name,
                spec.endpoint_host,
                type(exc).__name__,
            )
            raise Unreachable(spec.label) from None

    async def _post(
        self, spec: ModelSpec, url: str, payload: dict[str, Any], seconds: float
    ) -> Any:
        timeout = aiohttp.ClientTimeout(total=seconds)
        with self._transport_errors(spec, seconds):
            async with self._session.post(
                url, json=payload, headers=self._headers(), timeout=timeout
            ) as response:
                body = await response.read()
        if response.status >= 400:
            raise error_for_status(
                spec.label, response.status, body, response.headers, [self._token or ""]
            )
        return _json_answer(spec, body)


def _json_answer(spec: ModelSpec, body: bytes) -> Any:
    """A successful response body as JSON, or the error for an HTML page or broken JSON."""
    if _HTML.match(body[:100].decode("utf-8", "replace")):
        raise EndpointError(spec.label, "an HTML page instead of an answer")
    try:
        return json.loads(body)
    except ValueError:
        raise EndpointError(spec.label, "an answer that is not valid JSON") from None


def answer_text(spec: ModelSpec, data: Any) -> tuple[str, dict[str, Any]]:
    """The cleaned answer text and usage from a non-streamed response."""
    if spec.api == "chat":
        text, usage = parse_chat(data, spec.label)
    else:
        if isinstance(data, dict) and "choices" in data:
            raise WrongApiStyle(spec.label, "a chat answer to a text request")
        text, usage = parse_text(data, text_stops(spec)), {}
    text = strip_reasoning(text).strip()
    if not text:
        raise EmptyAnswer(spec.label)
    return text, usage


def _filtered(pieces: list[Piece], think: ThinkFilter | None, stop: StopFilter) -> list[Piece]:
    """Route streamed text through the think and stop filters; reasoning passes as is."""
    out: list[Piece] = []
    for piece in pieces:
        parts = think.feed(piece.text) if think and piece.kind == "text" else [piece]
        for part in parts:
            if part.kind == "text":
                text = stop.feed(part.text)
                if text:
                    out.append(Piece("text", text))
            else:
                out.append(part)
    return out


@contextlib.contextmanager
def _named(spec: ModelSpec) -> Iterator[None]:
    """Tag any InferenceError raised inside with the model's catalogue name, for logs."""
    try:
        yield
    except InferenceError as error:
        error.model_name = spec.name
        raise


ProbeStatus = Literal[
    "reachable", "cold", "unauthorized", "not found", "wrong API style", "rejected", "failing"
]


@dataclass(frozen=True)
class ProbeResult:
    """What one test call to a model's endpoint showed."""

    model: ModelSpec
    status: ProbeStatus
    hint: str
    latency: float

    @property
    def ok(self) -> bool:
        """Whether the model answered."""
        return self.status == "reachable"


PROBE_MESSAGES: list[ChatMessage] = [{"role": "user", "content": "Say OK."}]


def probe_verdict(spec: ModelSpec, error: InferenceError | None) -> tuple[ProbeStatus, str]:
    """Classify a test call's outcome, with a hint for the operator."""
    other = "text" if spec.api == "chat" else "chat"
    if error is None:
        return "reachable", f"answered through the {spec.api} API"
    if isinstance(error, ModelLoading):
        eta = f" (about {error.eta:g} s)" if error.eta else ""
        return "cold", f"the endpoint is starting{eta}; scaled-to-zero endpoints take minutes"
    if isinstance(error, RateLimited):
        return "reachable", "answered 429 (busy or out of quota): reachable, but try later"
    if isinstance(error, Unauthorized):
        return "unauthorized", "check HUGGINGFACE_API_TOKEN and that it can use this endpoint"
    if isinstance(error, ModelNotFound):
        if spec.api == "chat":
            return "not found", (
                "nothing at /v1/chat/completions: check the URL; if the endpoint does not run "
                "TGI, vLLM or SGLang, set api = 'text'"
            )
        return "not found", "check the endpoint URL, and that the endpoint is not deleted"
    if isinstance(error, WrongApiStyle):
        return "wrong API style", f"the answer does not fit the {spec.api} API; try api = '{other}'"
    if isinstance(error, BadRequest):
        if "input" in error.detail.lower() and spec.api == "chat":
            return "wrong API style", f"{error.detail}; try api = 'text'"
        if "messages" in error.detail.lower() and spec.api == "text":
            return "wrong API style", f"{error.detail}; try api = 'chat'"
        detail = error.detail or "HTTP " + str(error.status)
        return "rejected", f"{detail} (a paused endpoint answers 400: resume it)"
    return "failing", str(error)


async def probe(client: InferenceClient, spec: ModelSpec) -> ProbeResult:
    """Call a model once with a tiny request and classify what happened."""
    tiny = replace(spec, parameters={**spec.parameters, "max_new_tokens": 1})
    started = time.monotonic()
    error: InferenceError | None = None
    try:
        await client.complete(tiny, PROBE_MESSAGES)
    except EmptyAnswer:
        error = None  # one token may well be blank: the endpoint still answered
    except InferenceError as exc:
        error = exc
    status, hint = probe_verdict(spec, error)
    return ProbeResult(spec, status, hint, time.monotonic() - started)
