"""The FakeHF stand-in answers like a TGI Inference Endpoint, faults included."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.fakehf import (
    CHAT,
    FakeHF,
    Fault,
    StreamOptions,
    bad_gateway,
    bad_json,
    delay,
    drop,
    echo_headers,
    hang,
    loading,
    not_found,
    overloaded,
    status,
    unauthorized,
)

USER = {"role": "user", "content": "Hello?"}


@pytest.fixture
async def hf() -> AsyncIterator[FakeHF]:
    async with FakeHF("Hi there, friend.") as fake:
        yield fake


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": "tgi", "messages": [USER], **extra}


def text_body(inputs: str = "User: Hi\nAssistant:", **params: Any) -> dict[str, Any]:
    return {"inputs": inputs, "parameters": params}


async def sse_data(resp: aiohttp.ClientResponse) -> list[str]:
    """Data payloads of an SSE body, read line by line like a client must."""
    out = []
    async for raw in resp.content:
        line = raw.decode().rstrip("\r\n")
        if line.startswith("data:"):
            out.append(line.removeprefix("data:").lstrip(" "))
    return out


async def test_chat_completion_shape(hf: FakeHF, http: aiohttp.ClientSession) -> None:
    async with http.post(hf.url + CHAT, json=chat_body(max_tokens=50)) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/json"
        body = await resp.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "meta-llama/Llama-3.2-3B-Instruct"
    assert {"id", "created", "system_fingerprint", "usage"} <= body.keys()
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hi there, friend."},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_responder_and_reply_queue(hf: FakeHF, http: aiohttp.ClientSession) -> None:
    hf.responder = lambda r: f"{len(r['messages'])} msgs, last: {r['messages'][-1]['content']}"
    hf.queue_replies("first", "second")
    texts = []
    for n in range(1, 4):
        messages = [USER] * n
        async with http.post(hf.url + CHAT, json={"messages": messages}) as resp:
            texts.append((await resp.json())["choices"][0]["message"]["content"])
    assert texts == ["first", "second", "3 msgs, last: Hello?"]


async def test_async_responder(hf: FakeHF, http: aiohttp.ClientSession) -> None:
    async def answer(req: dict[str, Any]) -> str:
        await asyncio.sleep(0)
        return req["inputs"].upper()

    hf.responder = answer
    async with http.post(hf.url + "/generate", json=text_body("abc")) as resp:
        assert await resp.json() == {"generated_text": "ABC"}


async def test_chat_stream_default_framing(http: aiohttp.ClientSession) -> None:
    async with (
        FakeHF("Streaming works fine.", stream=StreamOptions(chunk_size=3)) as hf,
        http.post(hf.url + CHAT, json=chat_body(stream=True)) as resp,
    ):
        assert resp.headers["Content-Type"] == "text/event-stream"
        raw = await resp.read()
    assert raw.startswith(b"data:{")  # axum writes no space after "data:"
    resp_lines = [ln for ln in raw.decode().split("\n") if ln]
    data = [ln.removeprefix("data:") for ln in resp_lines]
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "Str"}
    assert "".join(c["choices"][0]["delta"]["content"] for c in chunks) == "Streaming works fine."
    assert [c["choices"][0]["finish_reason"] for c in chunks][-2:] == [None, "stop"]


@pytest.mark.parametrize("first", ["empty", "null", "missing"])
async def test_chat_stream_variants(http: aiohttp.ClientSession, first: Any) -> None:
    opts = StreamOptions(chunk_size=5, space=True, keepalive=True, first=first, done=False)
    async with (
        FakeHF("abcdefghij", stream=opts) as hf,
        http.post(
            hf.url + CHAT, json=chat_body(stream=True, stream_options={"include_usage": True})
        ) as resp,
    ):
        raw = (await resp.read()).decode()
    assert raw.startswith(":\n\ndata: {")
    data = [json.loads(ln.removeprefix("data: ")) for ln in raw.split("\n") if ln[:5] == "data:"]
    lead = data[0]["choices"][0]["delta"]
    assert lead.get("content", "-") == {"empty": "", "null": None, "missing": "-"}[first]
    assert data[-1]["choices"] == [] and data[-1]["usage"]["completion_tokens"] == 3
    assert "[DONE]" not in raw


async def test_chat_stream_break_midway(http: aiohttp.ClientSession) -> None:
    async with FakeHF("x" * 40, stream=StreamOptions(chunk_size=4, break_after=3)) as hf:
        async with http.post(hf.url + CHAT, json=chat_body(stream=True)) as resp:
            got = []
            with pytest.raises(aiohttp.ClientPayloadError):
                async for raw in resp.content:
                    got.append(raw)
        assert sum(b.startswith(b"data:") for b in got) == 3


async def test_chat_stream_error_event(http: aiohttp.ClientSession) -> None:
    async with (
        FakeHF("x" * 40, stream=StreamOptions(error_after=2)) as hf,
        http.post(hf.url + CHAT, json=chat_body(stream=True)) as resp,
    ):
        assert resp.status == 200
        data = await sse_data(resp)
    assert len(data) == 3
    error = json.loads(data[-1])["error"]
    assert error["http_status_code"] == 422 and error["message"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (chat_body(top_p=1.0), "`top_p` must be > 0.0 and < 1.0"),
        (chat_body(top_p=0), "`top_p`"),
        (chat_body(temperature=-1), "`temperature`"),
        (chat_body(max_tokens=0), "`max_new_tokens`"),
        (chat_body(stop=["a", "b", "c", "d", "e"]), "up to 4 stop sequences. Given: 5"),
        ({"messages": []}, "`messages` cannot be empty"),
        (chat_body(max_tokens=5000), "must be <= 4096"),
    ],
)
async def test_chat_validation(
    hf: FakeHF, http: aiohttp.ClientSession, body: dict[str, Any], fragment: str
) -> None:
    async with http.post(hf.url + CHAT, json=body) as resp:
        assert resp.status == 422
        err = await resp.json()
    assert err["error_type"] == "validation" and fragment in err["error"]


async def test_chat_shape_and_body_errors(hf: FakeHF, http: aiohttp.ClientSession) -> None:
    async with http.post(hf.url + CHAT, json={"messages": [{"content": "x"}]}) as resp:
        assert (resp.status, resp.content_type) == (422, "text/plain")
    async with http.post(hf.url + CHAT, json={"prompt": "x"}) as resp:
        assert resp.status == 422 and "messages" in await resp.text()
    headers = {"Content-Type": "application/json"}
    async with http.post(hf.url + CHAT, data="{oops", headers=headers) as resp:
        assert resp.status == 400
    async with http.post(hf.url + CHAT, data="{}") as resp:
        assert resp.status == 415
    async with http.post(hf.url + CHAT, json=chat_body(temperature=0)) as resp:
        assert resp.status == 200  # 0 means greedy in the chat API


async def test_root_return_full_text(hf: FakeHF, http: aiohttp.ClientSession) -> None:
    prompt = "User: Hi\nAssistant:"
    results = []
    for params in ({"return_full_text": False}, {}, {"return_full_text": True}):
        async with http.post(hf.url + "/", json=text_body(prompt, **params)) as resp:
            results.append(await resp.json())
    assert results == [
        [{"generated_text": "Hi there, friend."}],
        [{"generated_text": prompt + "Hi there, friend."}],
        [{"generated_text": prompt + "Hi there, friend."}],
    ]


async def test_stop_sequence_kept_and_cut(hf: FakeHF, http: aiohttp.ClientSession) -> None:
    hf.reply = " Fine, thanks.\nUser: and you?\nAssistant: me too"
    body = text_body(return_full_text=False, stop=["\nAssistant:", "\nUser:"], details=True)
    async with http.post(hf.url + "/generate", json=body) as resp:
        out = await resp.json()
    assert out["generated_text"] == " Fine, thanks.\nUser:"
    assert out["details"]["finish_reason"] == "stop_sequence"


@pytest.mark.parametrize(("fmt", "expected"), [("dict", {"generated_text": "ok"}), ("text", "ok")])
async def test_root_other_shapes(http: aiohttp.ClientSession, fmt: Any, expected: Any) -> None:
    async with (
        FakeHF("ok", root_format=fmt) as hf,
        http.post(hf.url + "/", json=text_body(return_full_text=False)) as resp,
    ):
        assert await resp.json() == expected


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"temperature": 0}, "`temperature` must be strictly positive"),
        ({"top_p": 1.0}, "`top_p` must be > 0.0 and < 1.0"),
        ({"max_new_tokens": 0}, "`max_new_tokens` must be strictly positive"),
        ({"stop": ["1", "2", "3", "4", "5"]}, "Given: 5"),
        ({"max_new_tokens": 4096}, "`inputs` tokens + `max_new_tokens` must be <= 4096"),
    ],
)
@pytest.mark.parametrize("path", ["/", "/generate", "/generate_stream"])
async def test_text_validation(
    hf: FakeHF, http: aiohttp.ClientSession, path: str, params: dict[str, Any], fragment: str
) -> None:
    async with http.post(hf.url + path, json=text_body(**params)) as resp:
        assert resp.status == 422
        err = await resp.json()
    assert err["error_type"] == "validation" and fragment in err["error"]


async def test_generate_length_limit(hf: FakeHF, http: aiohttp.ClientSession) -> None:
    hf.reply = "x" * 100
    body = text_body(max_new_tokens=3, details=True, temperature=0.7, top_p=0.9)
    async with http.post(hf.url + "/generate", json=body) as resp:
        out = await resp.json()
    assert out["generated_text"] == "x" * 12
    assert out["details"]["finish_reason"] == "length"


@pytest.mark.parametrize("path", ["/generate_stream", "/"])
async def test_generate_stream(http: aiohttp.ClientSession, path: str) -> None:
    body = {**text_body("Q:", return_full_text=False), "stream": path == "/"}
    async with (
        FakeHF("Hello world", stream=StreamOptions(chunk_size=4)) as hf,
        http.post(hf.url + path, json=body) as resp,
    ):
        assert resp.headers["Content-Type"] == "text/event-stream"
        events = [json.loads(d) for d in await sse_data(resp)]
    assert [e["token"]["text"] for e in events] == ["Hell", "o wo", "rld", "<|eot_id|>"]
    assert [e["token"]["special"] for e in events] == [False, False, False, True]
    assert [e["generated_text"] for e in events] == [None, None, None, "Hello world"]
    assert {"index", "details", "token"} <= events[0].keys()
    assert {"id", "logprob"} <= events[0]["token"].keys()


async def test_generate_stream_error_event(http: aiohttp.ClientSession) -> None:
    async with (
        FakeHF("Hello world", stream=StreamOptions(error_after=1)) as hf,
        http.post(hf.url + "/generate_stream", json=text_body()) as resp,
    ):
        events = [json.loads(d) for d in await sse_data(resp)]
    assert events[-1]["error_type"] == "generation" and events[-1]["error"]
    assert len(events) == 2


async def test_health_and_info(hf: FakeHF, http: aiohttp.ClientSession) -> None:
    async with http.get(hf.url + "/health") as resp:
        assert resp.status == 200 and await resp.read() == b""
    async with http.get(hf.url + "/info") as resp:
        info = await resp.json()
    assert info["model_id"] == "meta-llama/Llama-3.2-3B-Instruct"
    assert {"max_input_tokens", "max_total_tokens", "max_concurrent_requests"} <= info.keys()
    async with http.get(hf.url + "/nope") as resp:
        assert resp.status == 404
    async with http.get(hf.url + CHAT) as resp:
        assert resp.status == 405


@pytest.mark.parametrize(
    ("fault", "code", "ctype", "check"),
    [
        (loading(), 503, "application/json", lambda b: json.loads(b)["estimated_time"] == 20.0),
        (unauthorized(), 401, "application/json", lambda b: b"Invalid credentials" in b),
        (not_found(), 404, "text/plain", lambda b: b == b"Not Found"),
        (
            status(422, json={"error": "bad", "error_type": "validation"}),
            422,
            "application/json",
            lambda b: json.loads(b)["error_type"] == "validation",
        ),
        (status(500, json={"error": "boom"}), 500, "application/json", lambda b: b"boom" in b),
        (bad_gateway(), 502, "text/html", lambda b: b.startswith(b"<html>")),
        (bad_json(), 200, "application/json", lambda b: b == b'{"choices": ['),
        (status(200, json={"odd": 1}), 200, "application/json", lambda b: b"choices" not in b),
    ],
)
async def test_status_faults(
    hf: FakeHF,
    http: aiohttp.ClientSession,
    fault: Fault,
    code: int,
    ctype: str,
    check: Any,
) -> None:
    hf.add_faults(fault)
    async with http.post(hf.url + CHAT, json=chat_body()) as resp:
        assert (resp.status, resp.content_type) == (code, ctype)
        assert check(await resp.read())
    async with http.post(hf.url + CHAT, json=chat_body()) as resp:
        assert resp.status == 200  # consumed by exactly one request
    assert hf.pending_faults == []


async def test_retry_after_and_path_filter(hf: FakeHF, http: aiohttp.ClientSession) -> None:
    hf.add_faults(overloaded(retry_after=2), path=CHAT)
    async with http.get(hf.url + "/health") as resp:
        assert resp.status == 200  # other paths don't consume it
    async with http.post(hf.url + CHAT, json=chat_body()) as resp:
        assert resp.status == 429 and resp.headers["Retry-After"] == "2"
        assert (await resp.json())["error_type"] == "overloaded"


async def test_hang_released_by_client_timeout(http: aiohttp.ClientSession) -> None:
    hf = await FakeHF().start()
    hf.add_faults(hang())
    with pytest.raises(asyncio.TimeoutError):
        await http.post(hf.url + CHAT, json=chat_body(), timeout=aiohttp.ClientTimeout(total=0.2))
    assert hf.in_flight == 1  # still hanging on the server side
    started = time.monotonic()
    await hf.close()
    assert time.monotonic() - started < 0.5


async def test_close_with_client_still_waiting(http: aiohttp.ClientSession) -> None:
    hf = await FakeHF().start()
    hf.add_faults(hang())
    task = asyncio.create_task(http.post(hf.url + CHAT, json=chat_body()))
    await hf.wait_for_requests(1)
    await hf.close()
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await task


async def test_delay_and_latency(http: aiohttp.ClientSession) -> None:
    async with FakeHF(latency=0.05) as hf:
        hf.add_faults(delay(0.05))
        started = time.monotonic()
        async with http.post(hf.url + CHAT, json=chat_body()) as resp:
            assert resp.status == 200
        assert time.monotonic() - started >= 0.1


async def test_drop(hf: FakeHF, http: aiohttp.ClientSession) -> None:
    hf.add_faults(drop())
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await http.post(hf.url + CHAT, json=chat_body())
    async with http.post(hf.url + CHAT, json=chat_body()) as resp:
        assert resp.status == 200


async def test_echo_headers(hf: FakeHF, http: aiohttp.ClientSession) -> None:
    hf.add_faults(echo_headers(500))
    headers = {"Authorization": "Bearer hf_secret"}
    async with http.post(hf.url + CHAT, json=chat_body(), headers=headers) as resp:
        assert resp.status == 500
        assert "hf_secret" in await resp.text()


async def test_token_required(http: aiohttp.ClientSession) -> None:
    async with FakeHF(token="hf_right") as hf:
        hf.add_faults(loading())
        for headers in ({}, {"Authorization": "Bearer hf_wrong"}, {"Authorization": "hf_right"}):
            async with http.post(hf.url + CHAT, json=chat_body(), headers=headers) as resp:
                assert resp.status == 401
                assert await resp.json() == {"error": "Invalid credentials in Authorization header"}
        assert len(hf.pending_faults) == 1  # refused requests never reach the faults
        async with http.post(
            hf.url + CHAT, json=chat_body(), headers={"Authorization": "Bearer hf_right"}
        ) as resp:
            assert resp.status == 503


async def test_recording_and_wait(hf: FakeHF, http: aiohttp.ClientSession) -> None:
    async def post() -> int:
        async with http.post(hf.url + CHAT, json=chat_body(), headers={"X-Test": "1"}) as resp:
            return resp.status

    task = asyncio.create_task(post())
    seen = await hf.wait_for_requests(1, path=CHAT)
    assert seen[0].json == chat_body() and seen[0].headers["x-test"] == "1"
    assert seen[0].method == "POST" and hf.requests_to("/generate") == []
    assert await task == 200
    with pytest.raises(TimeoutError):
        await hf.wait_for_requests(2, timeout=0.05)


async def test_max_concurrency(http: aiohttp.ClientSession) -> None:
    release = asyncio.Event()

    async def slow(req: dict[str, Any]) -> str:
        await release.wait()
        return "done"

    async with FakeHF(max_concurrent_requests=3) as hf:
        hf.responder = slow

        async def post() -> int:
            async with http.post(hf.url + CHAT, json=chat_body()) as resp:
                return resp.status

        tasks = [asyncio.create_task(post()) for _ in range(3)]
        await hf.wait_until(lambda: hf.in_flight == 3)
        assert await post() == 429  # beyond max_concurrent_requests, like TGI
        release.set()
        assert await asyncio.gather(*tasks) == [200, 200, 200]
        assert hf.max_in_flight == 4
        await hf.wait_until(lambda: hf.in_flight == 0)


async def test_stream_pacing(http: aiohttp.ClientSession) -> None:
    opts = StreamOptions(chunk_size=1, chunk_delay=0.01)
    async with FakeHF("abcde", stream=opts) as hf:
        started = time.monotonic()
        async with http.post(hf.url + CHAT, json=chat_body(stream=True)) as resp:
            data = await sse_data(resp)
        assert time.monotonic() - started >= 0.05
    assert len(data) == 7  # five one-character chunks, the finish chunk, [DONE]


async def test_several_instances(http: aiohttp.ClientSession) -> None:
    async with FakeHF("one") as a, FakeHF("two", model_id="martindisley/unlearning-to-rest") as b:
        assert a.url != b.url
        for fake, word in ((a, "one"), (b, "two")):
            async with http.post(fake.url + CHAT, json=chat_body()) as resp:
                body = await resp.json()
            assert body["choices"][0]["message"]["content"] == word
        assert body["model"] == "martindisley/unlearning-to-rest"
        assert len(a.requests) == len(b.requests) == 1
