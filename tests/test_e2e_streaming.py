"""End to end: streamed replies grow in Discord, paced, and end as non-streamed ones would."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

from bot.client import HFCord
from bot.render import split_message
from cogs.chat import CURSOR, EDIT_INTERVAL, THINKING_STATUS
from tests import fakehf
from tests.e2e import World, running, settle
from tests.fakediscord import Channel, Limit, Message

REAL_WINDOW = 5.0  # Discord's: about 5 message creates and 5 edits per 5 s per channel


def long_answer(seed: int, size: int = 3000) -> str:
    """A varied answer of about size characters, with a code block across the rollover."""
    words = [f"word{seed}-{i}" for i in range(size // 10)]
    prose = " ".join(words[: len(words) // 2])
    code = "\n".join(f"x{i} = {i}" for i in range(60))
    return f"{prose}\n\n```python\n{code}\n```\n\n{' '.join(words[len(words) // 2 :])}"[:size]


def assert_paced(messages: list[Message]) -> None:
    """Each message was edited at most once per EDIT_INTERVAL while it grew (the last edit,
    made when the answer is complete, may follow sooner)."""
    for message in messages:
        times = [r.at for r in message.history[:-1]]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(gap >= EDIT_INTERVAL * 0.9 for gap in gaps), gaps


def max_edits_in_window(world: World, channel: Channel, window: float) -> int:
    times = sorted(r.at for _, r in world.emu.edits(channel))
    return max((sum(1 for t in times if start <= t < start + window) for start in times), default=0)


async def test_a_streamed_answer_grows_then_matches_the_whole_one(
    world: World, bot: HFCord
) -> None:
    answer = long_answer(1, 2600)
    world.hf.reply = answer
    world.hf.max_total_tokens = 100_000
    world.hf.stream = fakehf.StreamOptions(chunk_size=40, chunk_delay=0.04)  # about 2 s
    await world.emu.user_message(world.general, world.alice, "tell me", mention_bot=True)
    first = await world.emu.wait_for_bot_message(world.general)
    assert first.history[0].content.endswith(CURSOR)  # posted while still being written
    await settle(bot)
    expected = split_message(answer[: 500 * 4])  # the stand-in stops at max_tokens (500)
    assert [m.content for m in world.emu.bot_messages(world.general)] == expected
    assert len(first.history) >= 2  # it was edited as it grew
    assert_paced(world.emu.bot_messages(world.general))
    history = await bot.store.history(world.general.id)
    assert history[-1].content == answer[:2000].strip()


async def test_twenty_channels_stream_at_once_within_discords_limits(
    world: World, tmp_path: Path
) -> None:
    world.emu.limits["message_create"] = Limit(5, REAL_WINDOW)
    world.emu.limits["message_edit"] = Limit(5, REAL_WINDOW)
    channels = [world.emu.add_text_channel(world.guild, f"stream-{i}") for i in range(20)]
    answers = {c.id: long_answer(i) for i, c in enumerate(channels)}
    world.hf.responder = lambda body: answers[int(body["messages"][-1]["content"])]
    world.hf.max_total_tokens = 100_000
    world.hf.stream = fakehf.StreamOptions(chunk_size=50, chunk_delay=0.03)  # about 2 s each
    models = tmp_path / "models.toml"
    models.write_text('[[models]]\nname = "llama-3.2-3b"\nparameters = { max_new_tokens = 2000 }\n')
    env = {"MODELS_FILE": str(models), "HF_MAX_CONCURRENCY": "20", "USER_RATE_LIMIT": "0"}
    async with running(world, **env) as bot:
        await asyncio.gather(
            *(world.emu.user_message(c, world.alice, str(c.id), mention_bot=True) for c in channels)
        )
        await world.hf.wait_for_requests(20)
        for channel in channels:
            await world.emu.wait_for(
                lambda c=channel: (
                    len(world.emu.bot_messages(c)) == 2
                    and world.emu.bot_messages(c)[-1].content == split_message(answers[c.id])[-1]
                ),
                timeout=30,
            )
        await settle(bot)
    assert world.emu.rate_limited == []
    request_at = {int(r.json["messages"][-1]["content"]): r.time for r in world.hf.requests}
    for channel in channels:
        posted = world.emu.bot_messages(channel)
        assert [m.content for m in posted] == split_message(answers[channel.id])
        # The first words were visible within about a second of the first token.
        first_token = request_at[channel.id] + 0.03
        assert posted[0].created_at - first_token < 1.0
        assert max_edits_in_window(world, channel, REAL_WINDOW) <= 5
        assert_paced(posted)


async def test_reasoning_shows_a_status_and_stays_out_of_the_answer(
    world: World, bot: HFCord
) -> None:
    world.hf.reply = (
        "<think>" + "Let me think about this carefully. " * 4 + "</think>The answer is 4."
    )
    world.hf.stream = fakehf.StreamOptions(chunk_size=8, chunk_delay=0.02)
    await world.emu.user_message(world.general, world.alice, "2+2?", mention_bot=True)
    reply = await world.emu.wait_for_bot_message(world.general)
    assert reply.history[0].content == THINKING_STATUS
    await settle(bot)
    assert reply.content == "The answer is 4."
    history = await bot.store.history(world.general.id)
    assert history[-1].content == "The answer is 4."


async def test_a_stream_cut_midway_keeps_the_text_with_a_note(world: World, bot: HFCord) -> None:
    world.hf.reply = "This answer will not make it to the end, sadly."
    world.hf.stream = fakehf.StreamOptions(chunk_size=5, chunk_delay=0.01, break_after=4)
    await world.emu.user_message(world.general, world.alice, "go", mention_bot=True)
    await world.emu.wait_for_bot_message(world.general)
    await settle(bot)
    (reply,) = world.emu.bot_messages(world.general)
    assert reply.content.startswith("This answer will not")
    assert "-# ⚠️ Cut off: Llama 3.2 3B Instruct stopped answering midway" in reply.content
    assert CURSOR not in reply.content
    # A partial answer is not recorded: the next turn starts from what was complete.
    assert await bot.store.history(world.general.id) == []


async def test_an_error_event_before_any_text(world: World, bot: HFCord) -> None:
    world.hf.stream = fakehf.StreamOptions(error_after=0)
    note = await world.ask(world.general, world.alice, "go")
    assert "stopped answering midway" in note.content and "CUDA out of memory" in note.content
    await settle(bot)
    assert await bot.store.history(world.general.id) == []


async def test_streaming_can_be_turned_off(world: World, tmp_path: Path) -> None:
    world.hf.stream = fakehf.StreamOptions(chunk_size=4, chunk_delay=0.01)
    async with running(world, STREAMING="false") as bot:
        reply = await world.ask(world.general, world.alice, "whole please")
        await settle(bot)
    assert reply.content == "Hello from Llama." and len(reply.history) == 1
    assert "stream" not in world.hf.requests[-1].json

    models = tmp_path / "models.toml"
    models.write_text('[[models]]\nname = "llama-3.2-3b"\nstream = false\n')
    async with running(world, MODELS_FILE=str(models)) as bot:
        reply = await world.ask(world.random, world.alice, "whole again")
        await settle(bot)
    assert len(reply.history) == 1 and "stream" not in world.hf.requests[-1].json


async def test_a_stream_cancelled_at_shutdown_loses_its_cursor(world: World, bot: HFCord) -> None:
    world.hf.reply = "A long answer that the shutdown will interrupt halfway through. " * 5
    world.hf.stream = fakehf.StreamOptions(chunk_size=10, chunk_delay=0.5)
    await world.emu.user_message(world.general, world.alice, "go", mention_bot=True)
    reply = await world.emu.wait_for_bot_message(world.general)
    assert reply.content.endswith(CURSOR)
    assert not await bot.conversation.drain(0.1)  # what shutdown does: cancel after a grace
    assert "Cut off: the bot was restarting" in reply.content
    assert CURSOR not in reply.content
    assert await bot.store.history(world.general.id) == []
