"""Model calls: both API styles, response shapes, stop sequences and every failure."""

import asyncio
import re
from dataclasses import replace

import aiohttp
import pytest
from aioresponses import aioresponses

from bot.config import ModelSpec
from bot.inference import (
    BadRequest,
    ChatMessage,
    EmptyAnswer,
    EndpointError,
    InferenceClient,
    InferenceError,
    ModelLoading,
    ModelNotFound,
    NotConfigured,
    RateLimited,
    RetryPolicy,
    Timeout,
    Unauthorized,
    Unreachable,
    WrongApiStyle,
    chat_url,
    parse_text,
    probe,
    retry_delay,
    strip_reasoning,
    strip_stops,
    text_payload,
    text_prompt,
)
from tests import fakehf
from tests.conftest import TEST_TOKEN, Sleeps

MESSAGES: list[ChatMessage] = [
    {"role": "system", "content": "Be nice."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "How are you?"},
]


def chat_model(url: str) -> ModelSpec:
    return ModelSpec("m", "Model M", "owner/m", url, "chat")


def text_model(url: str) -> ModelSpec:
    return ModelSpec("t", "Model T", "owner/t", url, "text")


@pytest.fixture
def once(session: aiohttp.ClientSession) -> InferenceClient:
    """A client that makes a single attempt per call, to see each error as it comes."""
    return InferenceClient(session, TEST_TOKEN, timeout=2.0, retry=RetryPolicy(max_attempts=1))


@pytest.fixture
async def hf() -> fakehf.FakeHF:
    async with fakehf.FakeHF(reply="Fine, thanks.", token=TEST_TOKEN) as server:
        yield server


# --- request building -------------------------------------------------------------------


def test_chat_url_accepts_base_v1_or_full() -> None:
    assert chat_url("https://e.example") == "https://e.example/v1/chat/completions"
    assert chat_url("https://e.example/") == "https://e.example/v1/chat/completions"
    assert chat_url("https://router.huggingface.co/v1") == (
        "https://router.huggingface.co/v1/chat/completions"
    )
    assert chat_url("https://x/v1/chat/completions") == "https://x/v1/chat/completions"


def test_text_prompt_is_the_old_format_with_stops() -> None:
    prompt = text_prompt(MESSAGES)
    assert prompt == "Be nice.\n\nUser: Hi\nAssistant: Hello!\nUser: How are you?\nAssistant:"
    payload = text_payload(replace(text_model("x"), parameters={"max_new_tokens": 5}), MESSAGES)
    assert payload["parameters"] == {
        "max_new_tokens": 5,
        "return_full_text": False,
        "stop": ["\nUser:"],
    }


def test_stop_sequences_are_stripped() -> None:
    assert strip_stops("Sure thing.\nUser: and then", ["\nUser:"]) == "Sure thing."
    assert strip_stops("A ### B", ["\nUser:", "###"]) == "A "
    assert strip_stops("User: hijack", ["\nUser:"]) == ""
    assert strip_stops("no stop here", ["\nUser:"]) == "no stop here"


def test_reasoning_is_removed() -> None:
    assert strip_reasoning("<think>hmm\nok</think>Answer") == "Answer"
    assert strip_reasoning("<think>never closed") == ""


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ([{"generated_text": " list answer \nUser: more"}], " list answer "),
        ({"generated_text": "dict answer"}, "dict answer"),
        ("bare string", "bare string"),
        (42, "42"),
        ([], "[]"),
        (None, ""),
    ],
)
def test_text_response_shapes(data: object, expected: str) -> None:
    assert parse_text(data, ["\nUser:"]) == expected


# --- both API styles against a loopback endpoint -----------------------------------------


async def test_chat_api_round_trip(hf: fakehf.FakeHF, client: InferenceClient) -> None:
    completion = await client.complete(chat_model(hf.url), MESSAGES)
    assert completion.text == "Fine, thanks."
    assert completion.model == "m"
    assert completion.completion_tokens is not None
    request = hf.requests_to(fakehf.CHAT)[0]
    assert request.headers["Authorization"] == f"Bearer {TEST_TOKEN}"
    assert request.json["model"] == "owner/m"
    assert request.json["messages"] == MESSAGES
    assert request.json["max_tokens"] == 500
    assert request.json["top_p"] == 0.9
    assert "max_new_tokens" not in request.json


@pytest.mark.parametrize("root_format", ["list", "dict", "text"])
async def test_text_api_round_trip(
    hf: fakehf.FakeHF, client: InferenceClient, root_format: str
) -> None:
    hf.root_format = root_format
    hf.reply = "  I am well.\nUser: what about you?"
    completion = await client.complete(text_model(hf.url), MESSAGES)
    assert completion.text == "I am well."
    request = hf.requests_to("/")[0]
    assert request.json["inputs"].endswith("User: How are you?\nAssistant:")
    assert request.json["parameters"]["return_full_text"] is False
    assert request.json["parameters"]["stop"] == ["\nUser:"]


async def test_chat_answer_with_reasoning(hf: fakehf.FakeHF, client: InferenceClient) -> None:
    hf.reply = "<think>The user greets me.</think>\n\nHello!"
    assert (await client.complete(chat_model(hf.url), MESSAGES)).text == "Hello!"


async def test_empty_answer(hf: fakehf.FakeHF, client: InferenceClient) -> None:
    hf.reply = "   "
    with pytest.raises(EmptyAnswer):
        await client.complete(chat_model(hf.url), MESSAGES)


async def test_no_endpoint(client: InferenceClient) -> None:
    with pytest.raises(NotConfigured, match="no endpoint"):
        await client.complete(chat_model(""), MESSAGES)


# --- failures ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "error", "words"),
    [
        (fakehf.unauthorized(), Unauthorized, "token"),
        (fakehf.not_found(), ModelNotFound, "not found"),
        (
            fakehf.status(
                422, json={"error": "Input validation error: too long", "error_type": "validation"}
            ),
            BadRequest,
            "too long",
        ),
        (fakehf.overloaded(retry_after=3), RateLimited, "busy"),
        (fakehf.status(500, json={"error": "incomplete generation"}), EndpointError, "HTTP 500"),
        (fakehf.loading(), ModelLoading, "starting up"),
        (fakehf.bad_gateway(), ModelLoading, "starting up"),
        (fakehf.bad_json(), EndpointError, "not valid JSON"),
        (
            fakehf.status(200, text="<html><body>Oops</body></html>", content_type="text/html"),
            EndpointError,
            "HTML",
        ),
        (fakehf.status(200, json={"unexpected": True}), WrongApiStyle, "unexpected format"),
    ],
)
async def test_errors_are_typed_and_safe(
    hf: fakehf.FakeHF,
    once: InferenceClient,
    fault: fakehf.Fault,
    error: type[Exception],
    words: str,
) -> None:
    hf.add_faults(fault)
    with pytest.raises(error) as caught:
        await once.complete(chat_model(hf.url), MESSAGES)
    message = str(caught.value)
    assert words in message
    assert "**Model M**" in message  # names the model
    assert TEST_TOKEN not in message
    assert "<html" not in message


async def test_rate_limit_and_loading_details(hf: fakehf.FakeHF, once: InferenceClient) -> None:
    hf.add_faults(fakehf.overloaded(retry_after=3), fakehf.loading(estimated_time=42.0))
    with pytest.raises(RateLimited) as limited:
        await once.complete(chat_model(hf.url), MESSAGES)
    assert limited.value.retry_after == 3.0 and limited.value.status == 429
    with pytest.raises(ModelLoading) as loading:
        await once.complete(chat_model(hf.url), MESSAGES)
    assert loading.value.eta == 42.0 and loading.value.status == 503


async def test_echoed_token_never_reaches_the_message(
    hf: fakehf.FakeHF, client: InferenceClient
) -> None:
    hf.add_faults(
        fakehf.status(422, json={"error": f"bad header Authorization: Bearer {TEST_TOKEN}"})
    )
    with pytest.raises(BadRequest) as caught:
        await client.complete(chat_model(hf.url), MESSAGES)
    assert TEST_TOKEN not in str(caught.value)
    assert "[redacted]" in str(caught.value)
    hf.add_faults(fakehf.echo_headers(500))
    with pytest.raises(EndpointError) as caught_500:
        await client.complete(chat_model(hf.url), MESSAGES)
    assert TEST_TOKEN not in str(caught_500.value)


async def test_timeout(hf: fakehf.FakeHF, session: aiohttp.ClientSession) -> None:
    hf.add_faults(fakehf.hang())
    quick = InferenceClient(session, TEST_TOKEN, timeout=0.2, retry=RetryPolicy(max_attempts=1))
    with pytest.raises(Timeout, match="too long"):
        await quick.complete(chat_model(hf.url), MESSAGES)


async def test_connection_refused(client: InferenceClient, sleeps: Sleeps) -> None:
    # Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    with pytest.raises(Unreachable, match="could not be reached"):
        await client.complete(chat_model("http://127.0.0.1:9"), MESSAGES)
    # Retried with growing waits, then gave up once the next wait would pass the deadline.
    assert len(sleeps.delays) >= 3


async def test_dropped_connection(hf: fakehf.FakeHF, once: InferenceClient) -> None:
    hf.add_faults(fakehf.drop())
    with pytest.raises(Unreachable):
        await once.complete(chat_model(hf.url), MESSAGES)


async def test_with_aioresponses_statuses(once: InferenceClient) -> None:
    client = once
    url = "https://endpoint.example/v1/chat/completions"
    with aioresponses() as mocked:
        mocked.post(url, status=503, payload={"error": "loading", "estimated_time": 5})
        mocked.post(url, status=401, body="unauthorized")
        mocked.post(url, exception=TimeoutError())
        mocked.post(url, exception=aiohttp.ClientConnectionError("refused"))
        mocked.post(url, payload={"choices": [{"message": {"content": "hey"}}]})
        spec = chat_model("https://endpoint.example")
        with pytest.raises(ModelLoading):
            await client.complete(spec, MESSAGES)
        with pytest.raises(Unauthorized):
            await client.complete(spec, MESSAGES)
        with pytest.raises(Timeout):
            await client.complete(spec, MESSAGES)
        with pytest.raises(Unreachable):
            await client.complete(spec, MESSAGES)
        assert (await client.complete(spec, MESSAGES)).text == "hey"


async def test_text_request_answered_by_a_chat_server(client: InferenceClient) -> None:
    with aioresponses() as mocked:
        mocked.post("https://e.example", payload={"choices": [{"message": {"content": "x"}}]})
        with pytest.raises(WrongApiStyle):
            await client.complete(text_model("https://e.example"), MESSAGES)


# --- the connection check ---------------------------------------------------------------


async def test_probe_classifies(hf: fakehf.FakeHF, client: InferenceClient) -> None:
    assert (await probe(client, chat_model(hf.url))).status == "reachable"
    assert hf.requests_to(fakehf.CHAT)[-1].json["max_tokens"] == 1
    hf.add_faults(fakehf.loading())
    assert (await probe(client, chat_model(hf.url))).status == "cold"
    hf.add_faults(fakehf.unauthorized())
    assert (await probe(client, chat_model(hf.url))).status == "unauthorized"
    hf.add_faults(fakehf.not_found())
    result = await probe(client, chat_model(hf.url))
    assert result.status == "not found" and "api = 'text'" in result.hint
    # A text-generation request sent to a chat route: TGI rejects the shape.
    with aioresponses() as mocked:
        mocked.post("https://e.example", payload={"choices": [{"message": {"content": "x"}}]})
        result = await probe(client, text_model("https://e.example"))
    assert result.status == "wrong API style" and "api = 'chat'" in result.hint
    assert not re.search(TEST_TOKEN, result.hint)


# --- retries ----------------------------------------------------------------------------


async def test_cold_start_is_retried_until_it_answers(
    hf: fakehf.FakeHF, client: InferenceClient, sleeps: Sleeps
) -> None:
    hf.add_faults(fakehf.loading(estimated_time=5.0), fakehf.bad_gateway())
    seen: list[tuple[str, int]] = []

    async def on_retry(error: Exception, attempt: int, delay: float) -> None:
        seen.append((type(error).__name__, attempt))

    completion = await client.complete(chat_model(hf.url), MESSAGES, on_retry=on_retry)
    assert completion.text == "Fine, thanks." and completion.retries == 2
    assert seen == [("ModelLoading", 1), ("ModelLoading", 2)]
    assert 5.0 <= sleeps.delays[0] <= 5.5  # the body's estimated_time, plus jitter
    assert 0.5 <= sleeps.delays[1] <= 2.0  # exponential back-off (no hint in an HTML 502)
    assert len(hf.requests) == 3


async def test_retry_after_is_honoured(
    hf: fakehf.FakeHF, client: InferenceClient, sleeps: Sleeps
) -> None:
    hf.add_faults(fakehf.overloaded(retry_after=3))
    assert (await client.complete(chat_model(hf.url), MESSAGES)).retries == 1
    assert 3.0 <= sleeps.delays[0] <= 3.3


@pytest.mark.parametrize(
    "fault",
    [
        fakehf.status(500, json={"error": "boom"}),
        fakehf.unauthorized(),
        fakehf.status(422, json={"error": "bad", "error_type": "validation"}),
        fakehf.bad_json(),
    ],
)
async def test_other_failures_are_not_retried(
    hf: fakehf.FakeHF, client: InferenceClient, sleeps: Sleeps, fault: fakehf.Fault
) -> None:
    hf.add_faults(fault)
    with pytest.raises(InferenceError):
        await client.complete(chat_model(hf.url), MESSAGES)
    assert len(hf.requests) == 1 and sleeps.delays == []


async def test_gives_up_when_the_wait_would_pass_the_deadline(
    hf: fakehf.FakeHF, session: aiohttp.ClientSession, sleeps: Sleeps
) -> None:
    client = InferenceClient(session, TEST_TOKEN, retry=RetryPolicy(deadline=10), sleep=sleeps)
    hf.add_faults(fakehf.loading(estimated_time=60))
    with pytest.raises(ModelLoading):
        await client.complete(chat_model(hf.url), MESSAGES)
    assert sleeps.delays == [] and len(hf.requests) == 1


async def test_hanging_endpoint_is_retried_then_times_out(
    hf: fakehf.FakeHF, session: aiohttp.ClientSession, sleeps: Sleeps
) -> None:
    client = InferenceClient(
        session,
        TEST_TOKEN,
        timeout=0.2,
        retry=RetryPolicy(deadline=2.0),
        sleep=sleeps,
        rand=lambda: 0.0,
    )
    hf.add_faults(*[fakehf.hang()] * 5)
    started = asyncio.get_running_loop().time()
    with pytest.raises(Timeout):
        await client.complete(chat_model(hf.url), MESSAGES)
    assert asyncio.get_running_loop().time() - started < 2.0  # bounded by the deadline
    # Waits of 0.5 s and 1 s fit in what was left of the deadline; 2 s would not.
    assert sleeps.delays == [0.5, 1.0] and len(hf.requests) == 3


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    policy = RetryPolicy(base_delay=1, max_delay=8)
    error = Unreachable("m")
    low = [retry_delay(error, n, policy, lambda: 0.0) for n in range(1, 7)]
    high = [retry_delay(error, n, policy, lambda: 1.0) for n in range(1, 7)]
    assert low == [0.5, 1, 2, 4, 4, 4]
    assert high == [1, 2, 4, 8, 8, 8]


async def test_concurrency_is_capped_per_endpoint(
    hf: fakehf.FakeHF, session: aiohttp.ClientSession
) -> None:
    client = InferenceClient(session, TEST_TOKEN, max_concurrency=2)
    release = hf.hold("ok")
    calls = [asyncio.create_task(client.complete(chat_model(hf.url), MESSAGES)) for _ in range(6)]
    await hf.wait_for_requests(2)
    assert hf.in_flight == 2  # the other four wait for a slot, not on the endpoint
    release.set()
    assert [c.text for c in await asyncio.gather(*calls)] == ["ok"] * 6
    assert hf.max_in_flight == 2
