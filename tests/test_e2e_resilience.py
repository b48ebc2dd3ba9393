"""End to end: endpoint faults, floods, rate limits and bad input, with nothing lost."""

from __future__ import annotations

import pytest

from bot.client import HFCord
from tests import fakehf
from tests.e2e import World, running, settle

# --- endpoint faults --------------------------------------------------------------------


async def test_cold_start_shows_a_notice_then_the_answer(world: World, bot: HFCord) -> None:
    world.hf.add_faults(fakehf.loading(estimated_time=30), fakehf.loading(estimated_time=30))
    await world.emu.user_message(world.general, world.alice, "are you awake?", mention_bot=True)
    notice = await world.emu.wait_for_bot_message(world.general)
    assert "Llama 3.2 3B Instruct" in notice.content and "warming up" in notice.content
    # The notice is edited into the answer: one message, never a second notice.
    await world.emu.wait_for(lambda: notice.content == "Hello from Llama.")
    await settle(bot)
    assert len(world.emu.bot_messages(world.general)) == 1
    assert notice.history[0].content.startswith("⏳")
    assert notice.referenced is not None
    assert len(world.hf.requests) == 3
    # estimated_time says 30 s; waits are capped at 20 s (plus jitter) to check back sooner.
    assert all(20 <= d <= 22 for d in world.sleeps.delays)
    history = await bot.store.history(world.general.id)
    assert [m.content for m in history] == ["are you awake?", "Hello from Llama."]


async def test_cold_start_past_the_deadline_gives_a_clear_error(world: World) -> None:
    async with running(world, HF_RETRY_DEADLINE_SECONDS="10") as bot:
        world.hf.add_faults(fakehf.loading(estimated_time=600))
        note = await world.ask(world.general, world.alice, "wake up")
        assert "Llama 3.2 3B Instruct" in note.content and "starting up" in note.content
        assert "try again shortly" in note.content
        await settle(bot)
        assert await bot.store.history(world.general.id) == []
        assert (await world.ask(world.general, world.alice, "now?")).content == "Hello from Llama."


@pytest.mark.parametrize(
    ("faults", "requests"),
    [
        ([fakehf.loading(None), fakehf.loading(None)], 3),  # 503 twice, then success
        ([fakehf.overloaded(retry_after=2)], 2),  # 429 with Retry-After
        ([fakehf.bad_gateway()], 2),  # 502 with an HTML body
        ([fakehf.drop()], 2),  # connection closed without an answer
    ],
)
async def test_transient_faults_are_retried_into_an_answer(
    world: World, bot: HFCord, faults: list[fakehf.Fault], requests: int
) -> None:
    world.hf.add_faults(*faults)
    await world.emu.user_message(world.general, world.alice, "hello", mention_bot=True)
    await world.emu.wait_for(
        lambda: any(m.content == "Hello from Llama." for m in world.emu.bot_messages(world.general))
    )
    await settle(bot)
    assert len(world.hf.requests) == requests
    assert len(world.emu.bot_messages(world.general)) == 1
    assert len(await bot.store.history(world.general.id)) == 2


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        (fakehf.status(500, json={"error": "incomplete generation"}), "had a problem answering"),
        (fakehf.bad_json(), "not valid JSON"),
        (fakehf.unauthorized(), "refused the bot's Hugging Face token"),
        (fakehf.status(422, json={"error": "Input validation error"}), "/reset"),
    ],
)
async def test_lasting_faults_get_a_clear_error_and_the_bot_recovers(
    world: World, bot: HFCord, fault: fakehf.Fault, words: str
) -> None:
    world.hf.add_faults(fault)
    note = await world.ask(world.general, world.alice, "hello")
    assert words in note.content and "**Llama 3.2 3B Instruct**" in note.content
    assert len(world.hf.requests) == 1  # not retried
    await settle(bot)
    assert await bot.store.history(world.general.id) == []
    assert (await world.ask(world.general, world.alice, "again")).content == "Hello from Llama."


async def test_hanging_endpoint_times_out_within_the_deadline(world: World) -> None:
    # "hello?" hangs, however often it is retried.
    world.hf.hold("Hello from Llama.", only="hello?")
    env = {"HF_TIMEOUT_SECONDS": "0.3", "HF_RETRY_DEADLINE_SECONDS": "3"}
    async with running(world, **env) as bot:
        note = await world.ask(world.general, world.alice, "hello?")
        assert "took too long" in note.content
        assert len(world.hf.requests) >= 3  # read timeouts are retried within the deadline
        assert (await world.ask(world.general, world.alice, "now?")).content == "Hello from Llama."
        await settle(bot)
        assert len(await bot.store.history(world.general.id)) == 2


# --- floods and rate limits -------------------------------------------------------------


async def test_a_flooded_channel_answers_what_it_can_and_says_busy(world: World) -> None:
    release = world.hf.hold(lambda body: "answer to " + body["messages"][-1]["content"])
    async with running(world, CHANNEL_QUEUE_LIMIT="2") as bot:
        for i in range(4):
            await world.emu.user_message(world.general, world.alice, f"q{i}", mention_bot=True)
        busy = await world.emu.wait_for(
            lambda: (m := world.emu.bot_messages(world.general)) and len(m) == 2 and m
        )
        assert all("still answering earlier messages" in m.content for m in busy)
        assert [m.referenced.content for m in busy if m.referenced] == [
            f"<@{world.emu.bot_user.id}> q2",
            f"<@{world.emu.bot_user.id}> q3",
        ]
        release.set()
        await world.emu.wait_for(lambda: len(world.emu.bot_messages(world.general)) == 4)
        await settle(bot)
    answers = [m.content for m in world.emu.bot_messages(world.general)[2:]]
    assert answers == ["answer to q0", "answer to q1"]


async def test_requests_across_channels_share_the_endpoint_cap(world: World) -> None:
    release = world.hf.hold("ok")
    channels = [world.emu.add_text_channel(world.guild, f"c{i}") for i in range(5)]
    async with running(world, HF_MAX_CONCURRENCY="2") as bot:
        for channel in channels:
            await world.emu.user_message(channel, world.alice, "hi", mention_bot=True)
        await world.hf.wait_for_requests(2)
        assert world.hf.in_flight == 2
        release.set()
        for channel in channels:
            await world.emu.wait_for_bot_message(channel)
        await settle(bot)
    assert world.hf.max_in_flight == 2 and len(world.hf.requests) == 5


async def test_user_rate_limit(world: World) -> None:
    async with running(world, USER_RATE_LIMIT="2") as bot:
        await world.ask(world.general, world.alice, "one")
        await world.ask(world.general, world.alice, "two")
        notice = await world.ask(world.general, world.alice, "three")
        assert "faster than 2 a minute" in notice.content
        assert notice.pinged == set()
        await world.emu.user_message(world.general, world.alice, "four", mention_bot=True)
        # Bob is not limited by Alice's messages; Alice gets no second notice.
        reply = await world.ask(world.general, world.bob, "hi")
        assert reply.content == "Hello from Llama."
        await settle(bot)
    assert len(world.hf.requests) == 3
    notices = [m for m in world.emu.bot_messages(world.general) if "faster than" in m.content]
    assert len(notices) == 1


# --- bad input --------------------------------------------------------------------------


async def test_text_attachment_is_read_and_others_are_noted(world: World, bot: HFCord) -> None:
    await world.emu.user_message(
        world.general,
        world.alice,
        "Summarise this",
        mention_bot=True,
        attachments=[
            {"filename": "notes.txt", "content_type": "text/plain", "data": "Line one.\nLine two."},
            {"filename": "photo.png", "content_type": "image/png", "data": b"\x89PNG"},
            {"filename": "big.md", "content_type": "text/markdown", "size": 10**7},
        ],
    )
    reply = await world.emu.wait_for_bot_message(world.general)
    sent = world.last_request()["messages"][-1]["content"]
    assert sent == "Summarise this\n\n[Attached file notes.txt]\nLine one.\nLine two."
    assert reply.content.startswith("Hello from Llama.")
    assert "-# I skipped photo.png: I can only read text files." in reply.content
    assert "-# I skipped big.md: it is larger than 100 KB." in reply.content
    await settle(bot)
    history = await bot.store.history(world.general.id)
    assert history[-1].content == "Hello from Llama."  # notes are for the user, not the model


async def test_attachment_only_text_file_is_answered(world: World, bot: HFCord) -> None:
    await world.emu.user_message(
        world.general,
        world.alice,
        "",
        mention_bot=True,
        attachments=[{"filename": "q.py", "data": "print('hi')"}],
    )
    reply = await world.emu.wait_for_bot_message(world.general)
    assert reply.content == "Hello from Llama."
    assert world.last_request()["messages"][-1]["content"].endswith("print('hi')")


async def test_overlong_message_is_cut_with_a_note(world: World) -> None:
    async with running(world, HISTORY_MAX_CHARS="3000", SYSTEM_PROMPT="Be brief.") as bot:
        reply = await world.ask(world.general, world.alice, "x" * 5000)
        sent = world.last_request()["messages"][-1]["content"]
        assert len(sent) == 3000 - len("Be brief.")
        assert "-# Your message was cut to its first 2,991 characters to fit." in reply.content
        await settle(bot)


async def test_control_characters_are_removed(world: World, bot: HFCord) -> None:
    await world.ask(world.general, world.alice, "hel\x00lo\x1b[31m there\x07")
    assert world.last_request()["messages"][-1]["content"] == "hello[31m there"


async def test_reply_target_deleted_before_the_answer(world: World, bot: HFCord) -> None:
    release = world.hf.hold("late answer")
    asked = await world.emu.user_message(world.general, world.alice, "quick", mention_bot=True)
    await world.hf.wait_for_requests(1)
    await world.emu.delete_message(asked)
    release.set()
    reply = await world.emu.wait_for_bot_message(world.general)
    assert reply.content == "late answer" and reply.referenced is None  # a plain message
    await settle(bot)
    assert len(await bot.store.history(world.general.id)) == 2


async def test_reply_to_a_deleted_message_does_not_crash(world: World, bot: HFCord) -> None:
    first = await world.ask(world.general, world.alice, "hello")
    await world.emu.delete_message(first)
    await world.emu.user_message(world.general, world.alice, "about that", reply_to=first)
    reply = await world.ask(world.general, world.alice, "still there?")
    assert reply.content == "Hello from Llama."


async def test_channel_deleted_mid_turn_is_logged_and_survived(
    world: World, bot: HFCord, caplog: pytest.LogCaptureFixture
) -> None:
    release = world.hf.hold("ok", only="in a doomed channel")
    await world.emu.user_message(world.random, world.alice, "in a doomed channel", mention_bot=True)
    await world.hf.wait_for_requests(1)
    del world.emu.channels[world.random.id]  # deleted while the model was thinking
    release.set()
    assert (await world.ask(world.general, world.alice, "still here?")).content == "ok"
    await settle(bot)
    assert await bot.store.history(world.random.id) == []  # nobody saw it: not recorded
    gone = [r.getMessage() for r in caplog.records if "Cannot post" in r.getMessage()]
    assert len(gone) == 1 and "the channel is gone" in gone[0]


async def test_one_log_line_per_turn_without_content(
    world: World, bot: HFCord, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    world.hf.add_faults(fakehf.loading(None))
    await world.ask(world.general, world.alice, "private words")
    await settle(bot)
    world.hf.add_faults(fakehf.unauthorized())
    await world.ask(world.general, world.alice, "more private words")
    await settle(bot)
    turns = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Turn ")]
    assert len(turns) == 2
    assert f"channel={world.general.id} model=llama-3.2-3b outcome=ok retries=1" in turns[0]
    assert "prompt_chars=13 reply_chars=17" in turns[0]
    assert "model=llama-3.2-3b outcome=Unauthorized retries=0" in turns[1]
    assert not any("private" in r.getMessage() for r in caplog.records)
