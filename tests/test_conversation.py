"""Context building and turns, against a real store and a loopback endpoint."""

import asyncio

import aiohttp
import pytest

from bot.conversation import Conversation, Prompt, build_messages
from bot.inference import InferenceClient, Unauthorized
from bot.store import NewMessage, Store, StoredMessage
from tests import fakehf
from tests.conftest import TEST_TOKEN, make_settings


def stored(i: int, role: str, content: str, author: int | None = 1) -> StoredMessage:
    return StoredMessage(
        id=i,
        channel_id=1,
        discord_message_id=None,
        author_id=author if role == "user" else None,
        author_name=f"user{author}" if role == "user" else None,
        role=role,  # type: ignore[arg-type]
        content=content,
        model=None,
        created_at="",
    )


def prompt(content: str, author: int = 1, channel: int = 1) -> Prompt:
    return Prompt(channel, 1000, author, f"user{author}", content)


def test_context_order_system_history_new() -> None:
    history = [stored(1, "user", "q1"), stored(2, "assistant", "a1")]
    messages = build_messages("SYS", history, prompt("q2"), max_chars=1000)
    assert messages == [
        {"role": "system", "content": "SYS"},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"},
    ]


def test_budget_keeps_the_newest_and_starts_with_a_user_turn() -> None:
    history = [
        stored(1, "user", "x" * 50),
        stored(2, "assistant", "y" * 50),
        stored(3, "user", "z" * 10),
        stored(4, "assistant", "w" * 10),
    ]
    # Room for the two newest and the assistant before them, which must be dropped.
    messages = build_messages("S", history, prompt("new"), max_chars=1 + 3 + 20 + 50)
    assert [m["content"] for m in messages] == ["S", "z" * 10, "w" * 10, "new"]
    tight = build_messages("S", history, prompt("new"), max_chars=10)
    assert [m["role"] for m in tight] == ["system", "user"]


def test_several_people_are_named() -> None:
    history = [stored(1, "user", "hi", author=1), stored(2, "assistant", "hello")]
    messages = build_messages("S", history, prompt("me too", author=2), max_chars=1000)
    assert messages[1]["content"] == "user1: hi"
    assert messages[2]["content"] == "hello"
    assert messages[3]["content"] == "user2: me too"
    alone = build_messages("S", history, prompt("again", author=1), max_chars=1000)
    assert alone[1]["content"] == "hi" and alone[3]["content"] == "again"


@pytest.fixture
async def hf() -> fakehf.FakeHF:
    async with fakehf.FakeHF(token=TEST_TOKEN) as server:
        yield server


async def make_conversation(
    store: Store,
    session: aiohttp.ClientSession,
    hf: fakehf.FakeHF,
    unlearning: fakehf.FakeHF | None = None,
) -> Conversation:
    settings = make_settings(
        HUGGINGFACE_ENDPOINT=hf.url, HUGGINGFACE_ENDPOINT_UNLEARNING=(unlearning or hf).url
    )
    return Conversation(settings, store, InferenceClient(session, TEST_TOKEN, timeout=5))


async def test_turns_build_on_history_and_respect_reset(
    store: Store, session: aiohttp.ClientSession, hf: fakehf.FakeHF
) -> None:
    conversation = await make_conversation(store, session, hf)
    hf.responder = lambda body: f"seen {len(body['messages'])}"
    first = await conversation.answer(prompt("one"))
    assert first.text == "seen 2"  # system + new message
    await conversation.record(first, reply_message_id=555)
    second = await conversation.answer(prompt("two"))
    assert second.text == "seen 4"
    await conversation.record(second, reply_message_id=556)
    await store.reset(1)
    assert (await conversation.answer(prompt("three"))).text == "seen 2"
    rows = await store.history(1)
    assert [(r.role, r.content, r.discord_message_id) for r in rows] == [
        ("user", "one", 1000),
        ("assistant", "seen 2", 555),
        ("user", "two", 1000),
        ("assistant", "seen 4", 556),
    ]
    assert rows[1].model == "llama-3.2-3b"


async def test_channel_model_choice_routes_requests(
    store: Store, session: aiohttp.ClientSession, hf: fakehf.FakeHF
) -> None:
    async with fakehf.FakeHF(token=TEST_TOKEN) as unlearning:
        conversation = await make_conversation(store, session, hf, unlearning)
        await store.set_model(2, "unlearning-to-rest")
        await conversation.answer(prompt("x", channel=2))
        await conversation.answer(prompt("y", channel=3))
    assert [r.json["model"] for r in unlearning.requests] == ["martindisley/unlearning-to-rest"]
    assert [r.json["model"] for r in hf.requests] == ["meta-llama/Llama-3.2-3B-Instruct"]
    await store.set_model(4, "retired-model")
    assert (await conversation.model_for(4)).name == "llama-3.2-3b"


async def test_a_failed_call_records_nothing(
    store: Store, session: aiohttp.ClientSession, hf: fakehf.FakeHF
) -> None:
    conversation = await make_conversation(store, session, hf)
    hf.add_faults(fakehf.unauthorized())
    hf.token = "another-token"
    with pytest.raises(Unauthorized):
        await conversation.answer(prompt("hello"))
    assert await store.history(1) == []


async def test_channels_do_not_wait_for_each_other(
    store: Store, session: aiohttp.ClientSession, hf: fakehf.FakeHF
) -> None:
    conversation = await make_conversation(store, session, hf)
    release = asyncio.Event()

    async def responder(body: dict) -> str:
        if body["messages"][-1]["content"] == "slow":
            await release.wait()
        return "done"

    hf.responder = responder
    slow = asyncio.create_task(conversation.answer(prompt("slow", channel=1)))
    await hf.wait_for_requests(1)
    # Another channel answers while the first is still waiting on its model.
    fast = await asyncio.wait_for(conversation.answer(prompt("fast", channel=2)), 2)
    assert fast.text == "done" and not slow.done()
    assert conversation.lock(1) is conversation.lock(1)
    assert conversation.lock(1) is not conversation.lock(2)
    release.set()
    assert (await slow).text == "done"


async def test_turn_messages_are_recorded_with_authors(store: Store) -> None:
    await store.record_turn(
        1, [NewMessage("user", "hi", 5, 7, "Ada"), NewMessage("assistant", "yo", 6, model="m")]
    )
    rows = await store.context(1, 5)
    assert (rows[0].author_id, rows[0].author_name) == (7, "Ada")
