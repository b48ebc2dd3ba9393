"""Streamed answers: SSE parsing, filters across chunk boundaries, and the stream client."""

from __future__ import annotations

import itertools

import aiohttp
import pytest
from aiohttp import web
from aioresponses import aioresponses
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.config import ModelSpec
from bot.inference import (
    ChatMessage,
    EmptyAnswer,
    InferenceClient,
    StreamInterrupted,
    Unauthorized,
    strip_reasoning,
    strip_stops,
)
from bot.streaming import (
    Event,
    Piece,
    StopFilter,
    StreamFailed,
    ThinkFilter,
    chat_event,
    sse_data,
    text_event,
)
from tests import fakehf
from tests.conftest import TEST_TOKEN, Sleeps

MESSAGES: list[ChatMessage] = [{"role": "user", "content": "Hi"}]


def split_at(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    return [text[a:b] for a, b in itertools.pairwise(points)]


# --- SSE lines and events ---------------------------------------------------------------


def test_sse_data_lines() -> None:
    assert sse_data('data:{"a":1}\n') == '{"a":1}'
    assert sse_data('data: {"a":1}\r\n') == '{"a":1}'
    assert sse_data("data:  [DONE]") == "[DONE]"
    assert sse_data("data:data") == "data"  # not lstrip("data:")
    assert sse_data(":\n") is None  # keep-alive comment
    assert sse_data("event: message") is None
    assert sse_data("\n") is None


def test_chat_events() -> None:
    role_only = '{"choices":[{"delta":{"role":"assistant"}}]}'
    assert chat_event(role_only) == Event([])
    assert chat_event('{"choices":[{"delta":{"role":"assistant","content":null}}]}') == Event([])
    assert chat_event('{"choices":[{"delta":{"content":""}}]}') == Event([])
    assert chat_event('{"choices":[{"delta":{"content":"Hi"}}]}') == Event([Piece("text", "Hi")])
    assert chat_event('{"choices":[],"usage":{"total_tokens":3}}') == Event([])
    assert chat_event('{"choices":[{"delta":{"reasoning_content":"hmm"}}]}') == Event(
        [Piece("reasoning", "hmm")]
    )
    last = '{"choices":[{"delta":{"content":""},"finish_reason":"stop"}]}'
    assert chat_event(last) == Event([], finished=True)
    assert chat_event("[DONE]") == Event([], finished=True, done=True)
    with pytest.raises(StreamFailed) as failed:
        chat_event('{"error":{"message":"CUDA out of memory","http_status_code":422}}')
    assert failed.value.message == "CUDA out of memory" and failed.value.status == 422
    with pytest.raises(StreamFailed):
        chat_event("{not json")


def test_text_events() -> None:
    token = '{"index":1,"token":{"id":5,"text":"Hel","special":false},"generated_text":null}'
    assert text_event(token) == Event([Piece("text", "Hel")])
    eot = '{"token":{"id":9,"text":"<|eot_id|>","special":true},"generated_text":"Hello"}'
    assert text_event(eot) == Event([], finished=True, done=True)
    with pytest.raises(StreamFailed, match="overloaded"):
        text_event('{"error":"overloaded","error_type":"overloaded"}')


# --- filters: chunk boundaries anywhere -------------------------------------------------


def run_think(chunks: list[str]) -> tuple[str, str]:
    think = ThinkFilter()
    pieces = [p for chunk in chunks for p in think.feed(chunk)] + think.flush()
    text = "".join(p.text for p in pieces if p.kind == "text")
    reasoning = "".join(p.text for p in pieces if p.kind == "reasoning")
    return text, reasoning


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(["a", " ", "<", ">", "/", "think", "<think>", "</think>", "x\n"])),
    st.lists(st.integers(min_value=0, max_value=500), max_size=20),
)
def test_think_filter_matches_the_non_streamed_cleanup(parts: list[str], cuts: list[int]) -> None:
    full = "".join(parts)
    text, _ = run_think(split_at(full, cuts))
    assert text == strip_reasoning(full)


def test_think_filter_reasoning_and_boundaries() -> None:
    text, reasoning = run_think(["<thi", "nk>Let me s", "ee.</th", "ink>\n\nThe answer", " is 4."])
    assert text == "\n\nThe answer is 4." and reasoning == "Let me see."
    assert run_think(["a <", "b"]) == ("a <b", "")


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(["a", " ", "\n", "U", "User", "User:", "\nUser:", "##", "#"])),
    st.lists(st.integers(min_value=0, max_value=500), max_size=20),
)
def test_stop_filter_matches_strip_stops(parts: list[str], cuts: list[int]) -> None:
    full = "".join(parts)
    stops = ["\nUser:", "###"]
    stop = StopFilter(stops)
    streamed = "".join(stop.feed(chunk) for chunk in split_at(full, cuts)) + stop.flush()
    assert streamed == strip_stops(full, stops)  # however the text was chunked
    earliest = min((i for i in (full.find(s) for s in stops) if i != -1), default=len(full))
    assert full.startswith(streamed) and len(streamed) <= earliest


def test_stop_examples() -> None:
    assert strip_stops("Sure.\nUser: more", ["\nUser:"]) == "Sure."
    assert strip_stops("User: hijack", ["\nUser:"]) == ""
    assert strip_stops("Use the force", ["\nUser:"]) == "Use the force"
    # A whitespace-only stop sequence cuts where it occurs, not everything.
    assert strip_stops("One.\n\nTwo.", ["\n\n"]) == "One."


# --- the stream client against a loopback endpoint --------------------------------------

ANSWER = "Sure! Here is some code:\n\n```python\nprint('hi')\n```\n\nAnything else?"


def chat_model(url: str) -> ModelSpec:
    return ModelSpec("m", "Model M", "owner/m", url, "chat")


def text_model(url: str) -> ModelSpec:
    return ModelSpec("t", "Model T", "owner/t", url, "text")


async def collect(client: InferenceClient, spec: ModelSpec) -> tuple[str, str]:
    text, reasoning = "", ""
    async for piece in client.stream(spec, MESSAGES):
        if piece.kind == "text":
            text += piece.text
        else:
            reasoning += piece.text
    return text, reasoning


@pytest.fixture
async def hf() -> fakehf.FakeHF:
    async with fakehf.FakeHF(reply=ANSWER, token=TEST_TOKEN) as server:
        yield server


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 64])
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"space": True},
        {"keepalive": True},
        {"first": "empty"},
        {"first": "null"},
        {"first": "missing"},
        {"done": False},  # [DONE] missing, but the final chunk said the answer was complete
        {"usage": True},
    ],
)
async def test_chat_stream_framings(
    hf: fakehf.FakeHF, client: InferenceClient, chunk_size: int, options: dict
) -> None:
    hf.stream = fakehf.StreamOptions(chunk_size=chunk_size, **options)
    assert await collect(client, chat_model(hf.url)) == (ANSWER, "")
    request = hf.requests_to(fakehf.CHAT)[-1]
    assert request.json["stream"] is True
    assert request.headers["Authorization"] == f"Bearer {TEST_TOKEN}"


@pytest.mark.parametrize("chunk_size", [1, 5, 64])
async def test_text_stream_cuts_stop_sequences_and_special_tokens(
    hf: fakehf.FakeHF, client: InferenceClient, chunk_size: int
) -> None:
    hf.reply = "I am fine.\nUser: and you?"
    hf.stream = fakehf.StreamOptions(chunk_size=chunk_size)
    text, _ = await collect(client, text_model(hf.url))
    assert text == "I am fine."
    request = hf.requests_to("/generate_stream")[-1]
    assert request.json["parameters"]["stop"] == ["\nUser:"]


async def test_reasoning_is_kept_apart(hf: fakehf.FakeHF, client: InferenceClient) -> None:
    hf.reply = "<think>The user says hi.</think>Hello!"
    hf.stream = fakehf.StreamOptions(chunk_size=3)
    assert await collect(client, chat_model(hf.url)) == ("Hello!", "The user says hi.")


async def test_broken_stream_raises_after_the_partial_text(
    hf: fakehf.FakeHF, client: InferenceClient
) -> None:
    hf.stream = fakehf.StreamOptions(chunk_size=5, break_after=4)
    seen = ""
    with pytest.raises(StreamInterrupted, match="connection was lost"):
        async for piece in client.stream(chat_model(hf.url), MESSAGES):
            seen += piece.text
    assert seen == ANSWER[:20]


async def test_error_event_in_the_stream(hf: fakehf.FakeHF, client: InferenceClient) -> None:
    hf.stream = fakehf.StreamOptions(chunk_size=5, error_after=2)
    with pytest.raises(StreamInterrupted) as caught:
        await collect(client, chat_model(hf.url))
    assert "CUDA out of memory" in str(caught.value) and caught.value.status == 422
    hf.stream = fakehf.StreamOptions(chunk_size=5, error_after=0)
    with pytest.raises(StreamInterrupted, match="CUDA out of memory"):
        await collect(client, text_model(hf.url))


async def test_opening_is_retried_but_not_a_started_stream(
    hf: fakehf.FakeHF, client: InferenceClient, sleeps: Sleeps
) -> None:
    hf.add_faults(fakehf.loading(estimated_time=1.0), fakehf.overloaded(retry_after=1))
    assert (await collect(client, chat_model(hf.url)))[0] == ANSWER
    assert len(sleeps.delays) == 2
    hf.stream = fakehf.StreamOptions(chunk_size=5, break_after=2)
    with pytest.raises(StreamInterrupted):
        await collect(client, chat_model(hf.url))
    assert len(hf.requests) == 4  # the broken stream was not retried


async def test_a_plain_json_answer_to_a_stream_request(client: InferenceClient) -> None:
    with aioresponses() as mocked:
        mocked.post(
            "https://e.example/v1/chat/completions",
            payload={"choices": [{"message": {"content": "<think>x</think> whole"}}]},
        )
        assert await collect(client, chat_model("https://e.example")) == ("whole", "")


async def test_empty_stream(hf: fakehf.FakeHF, client: InferenceClient) -> None:
    hf.reply = "<think>only thoughts</think>"
    with pytest.raises(EmptyAnswer):
        await collect(client, chat_model(hf.url))


async def test_stream_holds_and_releases_its_endpoint_slot(
    hf: fakehf.FakeHF, session: aiohttp.ClientSession
) -> None:
    client = InferenceClient(session, TEST_TOKEN, max_concurrency=1)
    spec = chat_model(hf.url)
    first = client.stream(spec, MESSAGES)
    assert (await anext(first)).kind == "text"  # a stream is open and holds the only slot
    assert client._slot(hf.url).locked()
    await first.aclose()
    assert not client._slot(hf.url).locked()
    assert (await collect(client, spec))[0] == ANSWER
    # A failed opening gives its slot back too.
    hf.token = "other"
    with pytest.raises(Unauthorized):
        await collect(client, spec)
    assert not client._slot(hf.url).locked()


async def test_a_stream_that_closes_before_its_end(hf: fakehf.FakeHF) -> None:
    async def cut_short(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b'data:{"choices":[{"delta":{"content":"Half an ans"}}]}\n\n')
        return response  # a clean end, but no finish_reason and no [DONE]

    app = web.Application()
    app.router.add_post("/v1/chat/completions", cut_short)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            client = InferenceClient(session, TEST_TOKEN)
            seen = ""
            with pytest.raises(StreamInterrupted, match="ended early"):
                async for piece in client.stream(chat_model(f"http://127.0.0.1:{port}"), MESSAGES):
                    seen += piece.text
            assert seen == "Half an ans"
    finally:
        await runner.cleanup()


async def test_an_oversized_event_is_an_interruption(
    hf: fakehf.FakeHF, session: aiohttp.ClientSession
) -> None:
    client = InferenceClient(session, TEST_TOKEN)
    hf.reply = "x" * (3 * 2**20)  # one 3 MiB chunk: longer than aiohttp reads as a line
    hf.max_total_tokens = 10**7
    hf.stream = fakehf.StreamOptions(chunk_size=3 * 2**20)
    spec = ModelSpec("m", "Model M", "owner/m", hf.url, "chat", {"max_new_tokens": 10**6})
    with pytest.raises(StreamInterrupted, match="too large"):
        await collect(client, spec)
