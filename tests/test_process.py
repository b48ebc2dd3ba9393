"""A real bot process: SIGTERM drains, kill -9 loses at most the turn in flight, no leaks."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from tests import fakehf
from tests.e2e import World

ROOT = Path(__file__).resolve().parent.parent
CANARY = "hf_CANARY_never_a_real_token_0123456789abcdef"


class BotProcess:
    """`python -m tests.loopback_bot` with its output collected as it comes."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            self.lines.append(line.decode(errors="replace"))

    @property
    def output(self) -> str:
        return "".join(self.lines)

    async def wait_for_output(self, text: str, timeout: float = 10) -> None:
        """Wait until the process has printed text (re-checked as each line arrives)."""
        async with asyncio.timeout(timeout):
            while text not in self.output:
                if self._reader.done():
                    raise AssertionError(f"process ended without printing {text!r}")
                await asyncio.wait({self._reader}, timeout=0.05)

    async def wait(self, timeout: float = 15) -> int:
        code = await asyncio.wait_for(self.process.wait(), timeout)
        await self._reader
        return code


@asynccontextmanager
async def bot_process(world: World, **env: str) -> AsyncIterator[BotProcess]:
    """Start the bot process and wait until it is connected; kill it if still running."""
    sessions = sum(s.ready for s in world.emu.sessions) + 1
    full_env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(ROOT),
        "FAKE_DISCORD_PORT": str(world.emu.port),
        "DISCORD_TOKEN": world.emu.bot_user.token or "",
        "HUGGINGFACE_API_TOKEN": world.hf.token or "",
        "HUGGINGFACE_ENDPOINT": world.hf.url,
        "HUGGINGFACE_ENDPOINT_UNLEARNING": world.unlearning.url,
        "DATABASE_PATH": str(world.db),
        "HF_TIMEOUT_SECONDS": "10",
        **env,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.loopback_bot",
        "--env-file",
        str(world.db.parent / "absent.env"),
        env=full_env,
        cwd=world.db.parent,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    bot = BotProcess(process)
    try:
        await world.emu.wait_until_ready(timeout=20, sessions=sessions)
        yield bot
    finally:
        if process.returncode is None:
            process.kill()
            await bot.wait()


def rows(db: Path) -> list[tuple[Any, ...]]:
    """Every message row, read with the plain sqlite3 module after an integrity check."""
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return conn.execute("SELECT channel_id, role, content FROM messages ORDER BY id").fetchall()


def assert_whole_turns(found: list[tuple[Any, ...]]) -> None:
    """Each channel's rows alternate user, assistant: no half-turn was ever written."""
    by_channel: dict[int, list[str]] = {}
    for channel_id, role, _ in found:
        by_channel.setdefault(channel_id, []).append(role)
    for roles in by_channel.values():
        assert roles == ["user", "assistant"] * (len(roles) // 2)


async def test_sigterm_lets_the_turn_in_flight_finish(world: World) -> None:
    release = world.hf.hold("answered before shutdown")
    async with bot_process(world) as bot:
        await world.emu.user_message(
            world.general, world.alice, "secret question", mention_bot=True
        )
        await world.hf.wait_for_requests(1)
        bot.process.send_signal(signal.SIGTERM)
        await bot.wait_for_output("Shutting down")
        release.set()
        try:
            reply = await world.emu.wait_for_bot_message(world.general, timeout=10)
        except TimeoutError:
            raise AssertionError(bot.output) from None
        assert reply.content == "answered before shutdown"
        assert await bot.wait() == 0
    assert [r[2] for r in rows(world.db)] == ["secret question", "answered before shutdown"]
    assert "Turn channel=" in bot.output and "outcome=ok" in bot.output
    assert "secret question" not in bot.output  # no content in INFO logs
    assert "Traceback" not in bot.output


async def test_sigint_with_a_hung_model_cancels_cleanly(world: World) -> None:
    world.hf.hold("never")  # never released
    async with bot_process(world) as bot:
        await world.emu.user_message(world.general, world.alice, "stuck", mention_bot=True)
        await world.hf.wait_for_requests(1)
        bot.process.send_signal(signal.SIGINT)
        assert await bot.wait(timeout=15) == 0
    assert "Cancelling 1 turn(s)" in bot.output
    assert "Traceback" not in bot.output
    assert rows(world.db) == []


async def test_kill_9_loses_at_most_the_turn_in_flight(world: World) -> None:
    world.hf.responder = lambda body: "noted: " + body["messages"][-1]["content"]
    channels = [world.general, world.random]
    async with bot_process(world) as bot:
        for i in range(3):
            await world.ask(channels[i % 2], world.alice, f"fact {i}")
        # A burst across both channels, killed while answers are still being written.
        for i in range(3, 9):
            await world.emu.user_message(
                channels[i % 2], world.alice, f"fact {i}", mention_bot=True
            )
        await world.hf.wait_for_requests(5)
        bot.process.kill()
        assert await bot.wait() == -signal.SIGKILL
    found = rows(world.db)
    assert_whole_turns(found)
    for channel in channels:
        replied = len(world.emu.bot_messages(channel))
        recorded = sum(1 for r in found if r[0] == channel.id and r[1] == "assistant")
        # Every acknowledged (answered) turn is kept, bar at most the one in flight.
        assert replied - 1 <= recorded <= replied

    # A restart on the same database continues each conversation.
    async with bot_process(world) as bot:
        await world.ask(world.general, world.alice, "what do you know?")
        sent = [m["content"] for m in world.last_request()["messages"][1:]]
        assert sent[:4] == ["fact 0", "noted: fact 0", "fact 2", "noted: fact 2"]
        bot.process.send_signal(signal.SIGTERM)
        assert await bot.wait() == 0


@pytest.mark.parametrize("log_level", ["DEBUG", "INFO"])
async def test_tokens_never_leak(world: World, log_level: str) -> None:
    world.hf.token = CANARY
    world.hf.add_faults(
        fakehf.echo_headers(500),
        fakehf.echo_headers(422),
        fakehf.status(422, json={"error": f"Rejected header Authorization: Bearer {CANARY}"}),
    )
    async with bot_process(world, HUGGINGFACE_API_TOKEN=CANARY, LOG_LEVEL=log_level) as bot:
        for text in ("first", "second", "third", "fourth"):
            await world.ask(world.general, world.alice, text)
        ix = await world.emu.invoke_slash(world.general, world.alice, "model", subcommand="list")
        await ix.wait_response()
        bot.process.send_signal(signal.SIGTERM)
        assert await bot.wait() == 0
    assert world.hf.requests[-1].headers["Authorization"] == f"Bearer {CANARY}"
    discord_token = world.emu.bot_user.token or ""
    posted = [m.content for m in world.emu.messages.values()]
    posted += [str(c.data) for ix in world.emu.interactions.values() for c in ix.callbacks]
    stored = b"".join(p.read_bytes() for p in world.db.parent.glob(world.db.name + "*"))
    for secret in (CANARY, discord_token):
        assert secret not in bot.output
        assert not any(secret in text for text in posted)
        assert secret.encode() not in stored
    assert "Hugging Face API: Configured" in bot.output
    assert "via 127.0.0.1 (chat API)" in bot.output
