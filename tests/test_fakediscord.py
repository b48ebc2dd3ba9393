"""End-to-end tests of the Discord emulator with a real discord.py commands.Bot."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import discord
import pytest
from discord import app_commands
from discord.ext import commands

from tests.fakediscord import Channel, DiscordEmulator, Guild, Limit, User

MODELS = ["llama-3-8b", "llama-3-70b", "mistral-7b", "qwen-2-7b"]
WINDOW = 0.5  # short rate limit window so bucket tests stay fast


class ModelCog(commands.Cog):
    """A slash command group with autocomplete, a deferring command and a mention listener."""

    model = app_commands.Group(name="model", description="Model settings")

    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot
        self.seen: list[str] = []  # content of every message the bot received, as it saw it

    @model.command(name="set", description="Pick the model")
    async def model_set(self, interaction: discord.Interaction, name: str) -> None:
        await interaction.response.send_message(
            f"model set to {name}", allowed_mentions=discord.AllowedMentions.none()
        )
        await interaction.followup.send("saved", ephemeral=True)

    @model_set.autocomplete("name")
    async def model_name(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return [app_commands.Choice(name=m, value=m) for m in MODELS if current in m]

    @app_commands.command(name="slow", description="Defers, then edits the answer in")
    async def slow(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(thinking=True)
        await interaction.edit_original_response(content="done thinking")

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        self.seen.append(message.content)
        assert self.bot.user is not None
        if message.author.bot or not (message.guild is None or self.bot.user in message.mentions):
            return
        text = "@everyone look" if "shout" in message.content else f"hello {message.author.mention}"
        async with message.channel.typing():
            if "raw" in message.content:  # no allowed_mentions: Discord's defaults apply
                await message.reply(text)
            else:
                await message.reply(text, allowed_mentions=discord.AllowedMentions.none())


class EmuBot(commands.Bot):
    """Minimal bot: no message content intent, a prefix that matches everything."""

    def __init__(self, sync_guild: int | None = None) -> None:
        super().__init__(
            command_prefix="",
            intents=discord.Intents.default(),
            guild_ready_timeout=0.05,
            help_command=None,
        )
        self.sync_guild = sync_guild

    async def setup_hook(self) -> None:
        await self.add_cog(ModelCog(self))
        if self.sync_guild is None:
            await self.tree.sync()
        else:
            guild = discord.Object(self.sync_guild)
            self.tree.copy_global_to(guild=guild)
            await self.tree.sync(guild=guild)

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        pass  # discord.py sleeps 5 s before every non-initial IDENTIFY; too slow for tests

    async def on_command_error(
        self, context: commands.Context[Any], exception: commands.CommandError, /
    ) -> None:
        # An empty prefix makes every message a command lookup; unknown ones are expected.
        if not isinstance(exception, commands.CommandNotFound):
            raise exception

    @property
    def cog(self) -> ModelCog:
        cog = self.get_cog("ModelCog")
        assert isinstance(cog, ModelCog)
        return cog


@contextlib.asynccontextmanager
async def running_bot(emu: DiscordEmulator, sync_guild: int | None = None) -> AsyncIterator[EmuBot]:
    """Log a fresh bot in, connect it, wait for on_ready, and close it afterwards."""
    sessions = sum(s.ready for s in emu.sessions) + 1
    bot = EmuBot(sync_guild)
    await bot.login(emu.bot_user.token or "")
    task = asyncio.create_task(bot.connect(reconnect=False))
    try:
        ready = asyncio.create_task(bot.wait_until_ready())
        done, _ = await asyncio.wait({ready, task}, timeout=5, return_when="FIRST_COMPLETED")
        if task in done:
            task.result()  # surface why the connection ended
        if ready not in done:
            ready.cancel()
            raise AssertionError("bot never became ready")
        await emu.wait_until_ready(sessions=sessions)
        yield bot
    finally:
        await bot.close()
        await asyncio.wait_for(task, 5)


@dataclass
class World:
    guild: Guild
    general: Channel
    locked: Channel
    alice: User


@pytest.fixture
async def emu() -> AsyncIterator[DiscordEmulator]:
    limits = {"message_create": Limit(5, WINDOW), "message_edit": Limit(5, WINDOW)}
    async with DiscordEmulator(rate_limits=limits) as emu:
        emu.patch_discord()
        yield emu
    assert discord.http.Route.BASE == "https://discord.com/api/v10"  # patch undone


@pytest.fixture
def world(emu: DiscordEmulator) -> World:
    guild = emu.add_guild("hf")
    general = emu.add_text_channel(guild, "general")
    locked = emu.add_text_channel(guild, "announcements")
    emu.forbidden_channels.add(locked.id)
    alice = emu.add_user("alice")
    emu.add_member(guild, alice)
    return World(guild, general, locked, alice)


@pytest.fixture
async def bot(emu: DiscordEmulator, world: World) -> AsyncIterator[EmuBot]:
    async with running_bot(emu) as bot:
        yield bot
    assert emu.unknown_routes == []


def channel(bot: EmuBot, ch: Channel) -> discord.TextChannel:
    found = bot.get_channel(ch.id)
    assert isinstance(found, discord.TextChannel)
    return found


async def test_ready_and_mention_reply(emu: DiscordEmulator, world: World, bot: EmuBot) -> None:
    assert bot.user is not None and bot.user.id == emu.bot_user.id
    guild = bot.get_guild(world.guild.id)
    assert guild is not None
    assert [c.name for c in guild.text_channels] == ["general", "announcements"]
    other_bot = emu.add_user("otherbot", bot=True)
    await emu.user_message(world.general, world.alice, "no mention, content hidden")
    await emu.user_message(world.general, other_bot, "bots are ignored", mention_bot=True)
    asked = await emu.user_message(world.general, world.alice, "hi", mention_bot=True)

    reply = await emu.wait_for_bot_message(world.general)
    assert reply.content == f"hello <@{world.alice.id}>"
    assert reply.allowed_mentions == {"parse": []}
    assert reply.referenced is asked and reply.message_reference is not None
    assert reply.pinged == set()
    assert len(emu.bot_messages(world.general)) == 1  # nothing for the bot's message
    me = emu.bot_user.mention  # content is visible only when the bot is mentioned
    assert bot.cog.seen[:3] == ["", f"{me} bots are ignored", f"{me} hi"]
    assert emu.typing[world.general.id] == 1


async def test_pings_follow_allowed_mentions(
    emu: DiscordEmulator, world: World, bot: EmuBot
) -> None:
    await emu.user_message(world.general, world.alice, "shout raw", mention_bot=True)
    loud = await emu.wait_for_bot_message(world.general)
    assert loud.allowed_mentions is None
    assert loud.pinged == {"everyone", f"user:{world.alice.id}"}  # replies ping by default

    await emu.user_message(world.general, world.alice, "shout", mention_bot=True)
    quiet = await emu.wait_for_bot_message(world.general)
    assert quiet.content == "@everyone look" and quiet.pinged == set()


async def test_discord_validation_errors(emu: DiscordEmulator, world: World, bot: EmuBot) -> None:
    general = channel(bot, world.general)
    with pytest.raises(discord.HTTPException) as too_long:
        await general.send("x" * 2001)
    assert (too_long.value.status, too_long.value.code) == (400, 50035)
    with pytest.raises(discord.HTTPException) as empty:
        await general.send("")
    assert empty.value.code == 50006
    with pytest.raises(discord.Forbidden) as forbidden:
        await channel(bot, world.locked).send("hi")
    assert forbidden.value.code == 50013
    with pytest.raises(discord.NotFound) as unknown:
        await bot.get_partial_messageable(1234).send("hi")
    assert unknown.value.code == 10003
    missing = discord.MessageReference(message_id=42, channel_id=world.general.id)
    with pytest.raises(discord.HTTPException) as bad_ref:
        await general.send("re", reference=missing)
    assert bad_ref.value.code == 50035
    missing.fail_if_not_exists = False
    sent = await general.send("re", reference=missing)
    assert sent.reference is None
    await general.send(file=discord.File(io.BytesIO(b"abc"), "a.txt"))  # multipart, no content
    stored = emu.bot_messages(world.general)
    assert [m.content for m in stored] == ["re", ""]
    assert [(a["filename"], a["size"]) for a in stored[1].attachments] == [("a.txt", 3)]


async def test_raw_http_contract(emu: DiscordEmulator) -> None:
    async with aiohttp.ClientSession(emu.base_url + "/") as http:
        async with http.get("users/@me") as anonymous:
            assert anonymous.status == 401
        auth = {"Authorization": f"Bot {emu.bot_user.token}"}
        async with http.get("users/@me", headers=auth) as me:
            assert me.headers["Content-Type"] == "application/json"
            assert me.headers["X-RateLimit-Bucket"] and me.headers["Via"]
            assert (await me.json())["id"] == str(emu.bot_user.id)
        async with http.get("guilds/1/roles", headers=auth) as unknown:
            assert unknown.status == 404 and (await unknown.json())["code"] == 0
    assert emu.unknown_routes == ["GET /api/v10/guilds/1/roles"]
    stranger = EmuBot()
    with pytest.raises(discord.LoginFailure):
        await stranger.login("wrong-token")
    await stranger.close()


async def test_rate_limit_headers_make_discord_py_wait(
    emu: DiscordEmulator, world: World, bot: EmuBot
) -> None:
    general = channel(bot, world.general)
    sent = await asyncio.gather(*(general.send(f"m{i}") for i in range(7)))
    edits = await asyncio.gather(*(sent[0].edit(content=f"e{i}") for i in range(7)))

    stored = emu.bot_messages(world.general)
    assert sorted(m.content for m in stored[1:]) == [f"m{i}" for i in range(1, 7)]
    assert len(stored[0].edits) == len(edits) == 7
    edit_times = [revision.at for _, revision in emu.edits(world.general)]
    assert edit_times[5] - edit_times[0] >= WINDOW * 0.9  # the edit bucket held back #6
    assert stored[5].created_at - stored[0].created_at >= WINDOW * 0.9  # waited for the reset
    assert emu.rate_limited == []


async def test_lying_bucket_forces_429_and_discord_py_retries(
    emu: DiscordEmulator, world: World, bot: EmuBot
) -> None:
    emu.limits["message_create"] = Limit(2, 0.3, advertise=50)
    general = channel(bot, world.general)
    await asyncio.gather(*(general.send(f"m{i}") for i in range(5)))
    assert sorted(m.content for m in emu.bot_messages(world.general)) == [f"m{i}" for i in range(5)]
    assert emu.rate_limited and all(hit.bucket == "message_create" for hit in emu.rate_limited)


async def test_slash_command_response_followup_and_deferred_edit(
    emu: DiscordEmulator, world: World, bot: EmuBot
) -> None:
    ix = await emu.invoke_slash(
        world.general, world.alice, "model", subcommand="set", options={"name": "mistral-7b"}
    )
    response = await ix.wait_response()
    assert response.type == 4 and response.at < 3
    assert response.data["content"] == "model set to mistral-7b"
    (followup,) = await ix.wait_followups(1)
    assert followup.content == "saved" and followup.ephemeral

    slow = await emu.invoke_slash(world.general, world.alice, "slow")
    assert (await slow.wait_response()).type == 5
    original = await slow.wait_original(lambda m: m.content == "done thinking")
    assert len(original.edits) == 1 and not original.flags & 128  # no longer "thinking"

    emu.interaction_timeout = 0.0  # every answer now arrives "after 3 s": the token is dead
    late = await emu.invoke_slash(world.general, world.alice, "slow")
    callback = f"POST /api/v10/interactions/{late.id}/{late.token}/callback"
    await emu.wait_for(lambda: callback in emu.requests)
    assert late.response is None and late.original is None


async def test_autocomplete_returns_choices(
    emu: DiscordEmulator, world: World, bot: EmuBot
) -> None:
    choices = await emu.autocomplete(
        world.general, world.alice, "model", subcommand="set", option="name", value="ll"
    )
    assert [c["value"] for c in choices] == ["llama-3-8b", "llama-3-70b"]


async def test_direct_messages(emu: DiscordEmulator, world: World, bot: EmuBot) -> None:
    dm = emu.dm_channel(world.alice)
    await emu.user_message(dm, world.alice, "hello in private")
    reply = await emu.wait_for_bot_message(dm)
    assert reply.content == f"hello <@{world.alice.id}>" and reply.channel is dm

    sent = await (await bot.create_dm(discord.Object(world.alice.id))).send("psst")
    assert emu.bot_messages(dm)[-1].id == sent.id
    shy = emu.add_user("shy", accepts_dms=False)
    with pytest.raises(discord.Forbidden) as closed:
        await (await bot.create_dm(discord.Object(shy.id))).send("hi")
    assert closed.value.code == 50007


async def test_gateway_reconnect_request(emu: DiscordEmulator, world: World, bot: EmuBot) -> None:
    await emu.request_reconnect()  # client tries RESUME, gets op 9, identifies again
    await emu.wait_until_ready(sessions=2)
    assert [f["op"] for f in emu.sessions[1].received if f["op"] != 1] == [6]
    await emu.user_message(world.general, world.alice, "still there?", mention_bot=True)
    assert (await emu.wait_for_bot_message(world.general)).content.startswith("hello")


async def test_restart_against_same_emulator(emu: DiscordEmulator, world: World) -> None:
    async with running_bot(emu):
        await emu.user_message(world.general, world.alice, "one", mention_bot=True)
        await emu.wait_for_bot_message(world.general)
    started = time.monotonic()
    async with running_bot(emu, sync_guild=world.guild.id):
        await emu.user_message(world.general, world.alice, "two", mention_bot=True)
        second = await emu.wait_for_bot_message(world.general)
        ix = await emu.invoke_slash(world.general, world.alice, "slow")
        await ix.wait_original(lambda m: m.content == "done thinking")
    assert second.created_at > started
    assert len(emu.sessions) == 2 and all(s.closed for s in emu.sessions)
    assert "guild_id" in emu.commands[world.guild.id][0]
    assert emu.unknown_routes == [] and emu.rate_limited == []
