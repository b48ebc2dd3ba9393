"""Context building and turns, against a real store and a loopback endpoint."""

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from bot.conversation import ChannelBusy, Conversation, Prompt, build_messages
from bot.inference import EmptyAnswer, InferenceClient, Unauthorized
from bot.store import NewMessage, Store, StoredMessage
from bot.streaming import Piece
from tests import fakehf
from tests.conftest import TEST_TOKEN, Sleeps, make_settings


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


class ShownReply:
    """A Reply that keeps what it was asked to show, like a Discord channel would."""

    def __init__(self, *, refuse: bool = False) -> None:
        self.refuse = refuse
        self.shown: list[str] = []
        self.warmed: list[str] = []
        self.streamed = False

    async def warming_up(self, model: str) -> None:
        self.warmed.append(model)

    async def stream(self, pieces: AsyncIterator[Piece]) -> str:
        self.streamed = True
        return "".join([p.text async for p in pieces if p.kind == "text"]).strip()

    async def finish(self, text: str) -> int | None:
        if self.refuse:
            return None
        self.shown.append(text)
        return 5000 + len(self.shown)


@pytest.fixture
async def hf() -> AsyncIterator[fakehf.FakeHF]:
    async with fakehf.FakeHF(token=TEST_TOKEN) as server:
        yield server


async def make_conversation(
    store: Store,
    session: aiohttp.ClientSession,
    hf: fakehf.FakeHF,
    unlearning: fakehf.FakeHF | None = None,
    sleeps: Sleeps | None = None,
    **env: str,
) -> Conversation:
    settings = make_settings(
        HUGGINGFACE_ENDPOINT=hf.url,
        HUGGINGFACE_ENDPOINT_UNLEARNING=(unlearning or hf).url,
        **env,
    )
    client = InferenceClient(session, TEST_TOKEN, timeout=5, sleep=sleeps or Sleeps())
    return Conversation(settings, store, client)


@pytest.mark.parametrize("streaming", ["true", "false"])
async def test_turns_build_on_history_and_respect_reset(
    store: Store, session: aiohttp.ClientSession, hf: fakehf.FakeHF, streaming: str
) -> None:
    conversation = await make_conversation(store, session, hf, STREAMING=streaming)
    hf.responder = lambda body: f"seen {len(body['messages'])}"
    reply = ShownReply()
    first = await conversation.respond(prompt("one"), reply)
    assert first is not None and first.text == "seen 2"  # system + new message
    assert reply.streamed is (streaming == "true")
    await conversation.respond(prompt("two"), reply)
    await store.reset(1)
    await conversation.respond(prompt("three"), reply)
    assert reply.shown == ["seen 2", "seen 4", "seen 2"]
    rows = await store.history(1)
    assert [(r.role, r.content, r.discord_message_id) for r in rows] == [
        ("user", "one", 1000),
        ("assistant", "seen 2", 5001),
        ("user", "two", 1000),
        ("assistant", "seen 4", 5002),
        ("user", "three", 1000),
        ("assistant", "seen 2", 5003),
    ]
    assert rows[1].model == "llama-3.2-3b"


async def test_channel_model_choice_routes_requests(
    store: Store, session: aiohttp.ClientSession, hf: fakehf.FakeHF
) -> None:
    async with fakehf.FakeHF(token=TEST_TOKEN) as unlearning:
        conversation = await make_conversation(store, session, hf, unlearning)
        await store.set_model(2, "unlearning-to-rest")
        await conversation.respond(prompt("x", channel=2), ShownReply())
        await conversation.respond(prompt("y", channel=3), ShownReply())
    assert [r.json["model"] for r in unlearning.requests] == ["martindisley/unlearning-to-rest"]
    assert [r.json["model"] for r in hf.requests] == ["meta-llama/Llama-3.2-3B-Instruct"]
    await store.set_model(4, "retired-model")
    assert (await conversation.model_for(4)).name == "llama-3.2-3b"


async def test_a_failed_call_records_nothing(
    store: Store, session: aiohttp.ClientSession, hf: fakehf.FakeHF
) -> None:
    conversation = await make_conversation(store, session, hf)
    hf.token = "another-token"
    reply = ShownReply()
    with pytest.raises(Unauthorized):
        await conversation.respond(prompt("hello"), reply)
    assert reply.shown == [] and await store.history(1) == []


async def test_an_answer_that_was_not_shown_is_not_recorded(
    store: Store, session: aiohttp.ClientSession, hf: fakehf.FakeHF
) -> None:
    conversation = await make_conversation(store, session, hf)
    assert await conversation.respond(prompt("hello"), ShownReply(refuse=True)) is None
    assert await store.history(1) == []


@pytest.mark.parametrize("streaming", ["true", "false"])
async def test_a_blank_answer_is_an_error(
    store: Store, session: aiohttp.ClientSession, hf: fakehf.FakeHF, streaming: str
) -> None:
    conversation = await make_conversation(store, session, hf, STREAMING=streaming)
    hf.reply = "<think>only thoughts</think>\n\n  "
    reply = ShownReply()
    with pytest.raises(EmptyAnswer):
        await conversation.respond(prompt("hello"), reply)
    assert reply.shown == [] and await store.history(1) == []


async def test_a_cold_model_is_announced_once(
    store: Store, session: aiohttp.ClientSession, hf: fakehf.FakeHF
) -> None:
    sleeps = Sleeps()
    conversation = await make_conversation(store, session, hf, sleeps=sleeps)
    hf.add_faults(fakehf.loading(), fakehf.loading(), fakehf.overloaded())
    reply = ShownReply()
    answer = await conversation.respond(prompt("wake up"), reply)
    assert answer is not None and answer.completion.retries == 3
    assert reply.warmed == ["Llama 3.2 3B Instruct"] and len(sleeps.delays) == 3


async def test_a_reset_during_a_turn_sets_that_turn_aside(
    store: Store, session: aiohttp.ClientSession, hf: fakehf.FakeHF
) -> None:
    conversation = await make_conversation(store, session, hf, STREAMING="false")
    release = hf.hold(lambda body: f"seen {len(body['messages'])}", only="slow")
    await conversation.respond(prompt("earlier"), ShownReply())
    slow = asyncio.create_task(conversation.respond(prompt("slow"), ShownReply()))
    await hf.wait_for_requests(2)
    assert await store.reset(1) == 2  # the turn in flight is not written yet
    release.set()
    await slow
    # The slow turn began before the reset: it is set aside too, not carried over.
    assert await store.context(1, 10) == []
    assert (await conversation.respond(prompt("after"), ShownReply())).text == "seen 2"
    assert len(await store.history(1)) == 6


async def test_turns_in_one_channel_wait_and_other_channels_do_not(
    store: Store, session: aiohttp.ClientSession, hf: fakehf.FakeHF
) -> None:
    conversation = await make_conversation(store, session, hf)
    order: list[str] = []

    async def turn(channel: int, name: str, hold: asyncio.Event | None = None) -> None:
        async with conversation.turn(channel):
            order.append(f"start {name}")
            if hold is not None:
                await hold.wait()
            order.append(f"end {name}")

    hold = asyncio.Event()
    first = asyncio.create_task(turn(1, "a", hold))
    second = asyncio.create_task(turn(1, "b"))
    other = asyncio.create_task(turn(2, "c"))
    await other  # channel 2 finished while channel 1's first turn still holds its lock
    assert order == ["start a", "start c", "end c"]
    hold.set()
    await asyncio.gather(first, second)
    assert order[3:] == ["end a", "start b", "end b"]


async def test_a_channel_queue_is_bounded(
    store: Store, session: aiohttp.ClientSession, hf: fakehf.FakeHF
) -> None:
    conversation = await make_conversation(store, session, hf, CHANNEL_QUEUE_LIMIT="2")
    hold = asyncio.Event()

    async def turn() -> None:
        async with conversation.turn(1):
            await hold.wait()

    tasks = [asyncio.create_task(turn()) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(ChannelBusy):
        async with conversation.turn(1):
            pass
    async with conversation.turn(2):  # another channel is not affected
        pass
    hold.set()
    await asyncio.gather(*tasks)
    async with conversation.turn(1):  # room again
        pass


async def test_turn_messages_are_recorded_with_authors(store: Store) -> None:
    await store.record_turn(
        1, NewMessage("user", "hi", 5, 7, "Ada"), NewMessage("assistant", "yo", 6, model="m")
    )
    rows = await store.context(1, 5)
    assert (rows[0].author_id, rows[0].author_name) == (7, "Ada")
