"""Shared set-up for end-to-end tests: a loopback Discord server and HF endpoints.

The bot is composed exactly as `python -m bot` composes it (`bot.__main__.services`); only
the Discord and Hugging Face hosts are loopback stand-ins, and retry waits are recorded
instead of slept. Every wait is on an event, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bot.__main__ import services
from bot.client import HFCord
from bot.config import Settings
from tests import fakehf
from tests.conftest import TEST_TOKEN, Sleeps
from tests.fakediscord import Channel, DiscordEmulator, Guild, Limit, Message, User

MANAGE_MESSAGES = 1 << 13
EPHEMERAL = 1 << 6
WINDOW = 1.0  # a shorter rate-limit window than Discord's 5 s keeps bursts fast


@dataclass
class World:
    """A Discord server with people, two HF endpoints, and a database path."""

    emu: DiscordEmulator
    hf: fakehf.FakeHF
    unlearning: fakehf.FakeHF
    db: Path
    guild: Guild
    general: Channel
    random: Channel
    alice: User
    bob: User
    mod: User
    robot: User
    env: dict[str, str] = field(default_factory=dict)
    sleeps: Sleeps = field(default_factory=Sleeps)

    def settings(self, **extra: str) -> Settings:
        env = {
            "DISCORD_TOKEN": self.emu.bot_user.token or "",
            "HUGGINGFACE_API_TOKEN": TEST_TOKEN,
            "HUGGINGFACE_ENDPOINT": self.hf.url,
            "HUGGINGFACE_ENDPOINT_UNLEARNING": self.unlearning.url,
            "DATABASE_PATH": str(self.db),
            "HF_TIMEOUT_SECONDS": "5",
            **self.env,
            **extra,
        }
        return Settings.from_env(env)

    async def ask(self, channel: Channel, author: User, text: str, **kw: Any) -> Message:
        """Mention the bot and wait for its (first) reply."""
        await self.emu.user_message(channel, author, text, mention_bot=True, **kw)
        return await self.emu.wait_for_bot_message(channel)

    def last_request(self, hf: fakehf.FakeHF | None = None) -> dict[str, Any]:
        body: dict[str, Any] = (hf or self.hf).requests_to(fakehf.CHAT)[-1].json
        return body


@contextlib.asynccontextmanager
async def running(world: World, *, force_sync: bool = False, **env: str) -> AsyncIterator[HFCord]:
    """Start the production composition against the loopback hosts; stop it afterwards."""
    settings = world.settings(**env)
    sessions = sum(s.ready for s in world.emu.sessions) + 1
    async with services(
        settings, force_sync=force_sync, sleep=world.sleeps, guild_ready_timeout=0.05
    ) as bot:
        await bot.login(settings.discord_token or "")
        task = asyncio.create_task(bot.connect(reconnect=False))
        try:
            await asyncio.wait_for(bot.wait_until_ready(), 5)
            await world.emu.wait_until_ready(sessions=sessions)
            yield bot
        finally:
            await bot.close()
            await asyncio.wait_for(task, 5)


async def settle(bot: HFCord) -> None:
    """Wait until every turn in progress is posted and recorded."""
    assert await bot.conversation.drain(10)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    limits = {"message_create": Limit(5, WINDOW), "message_edit": Limit(5, WINDOW)}
    async with (
        DiscordEmulator(rate_limits=limits) as emu,
        fakehf.FakeHF(reply="Hello from Llama.", token=TEST_TOKEN) as hf,
        fakehf.FakeHF(reply="Hello from Unlearning.", token=TEST_TOKEN) as unlearning,
    ):
        emu.patch_discord()
        guild = emu.add_guild("hf")
        general = emu.add_text_channel(guild, "general")
        random = emu.add_text_channel(guild, "random")
        alice, bob = emu.add_user("alice"), emu.add_user("bob")
        mod, robot = emu.add_user("mod"), emu.add_user("robot", bot=True)
        for user in (alice, bob, robot):
            emu.add_member(guild, user)
        emu.add_member(guild, mod, permissions=MANAGE_MESSAGES)
        yield World(
            emu, hf, unlearning, tmp_path / "e2e.sqlite3", guild, general, random, alice, bob,
            mod, robot,
        )  # fmt: skip
        assert emu.unknown_routes == []
        assert emu.rate_limited == [], "the bot tripped Discord's rate limits"


@pytest.fixture
async def bot(world: World) -> AsyncIterator[HFCord]:
    async with running(world) as bot:
        yield bot
