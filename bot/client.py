"""The discord.py bot: holds the services, loads the cogs, syncs slash commands."""

from __future__ import annotations

import hashlib
import json
import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot.config import Settings
from bot.conversation import Conversation
from bot.inference import InferenceClient
from bot.ratelimit import UserRateLimiter
from bot.store import Store

log = logging.getLogger(__name__)

EXTENSIONS = ("cogs.chat", "cogs.models", "cogs.reset")
# How long shutdown waits for answers in progress before cancelling them.
SHUTDOWN_GRACE = 5.0
SYNC_HASH_KEY = "commands_hash"


def intents(message_content: bool = False) -> discord.Intents:
    """Gateway intents: none privileged unless asked (mentions and DMs carry content anyway)."""
    wanted = discord.Intents.default()
    wanted.message_content = message_content
    wanted.members = False
    wanted.presences = False
    return wanted


class HFCord(commands.Bot):
    """hfcord's Discord client; services are passed in, never created here."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        inference: InferenceClient,
        *,
        force_sync: bool = False,
        **options: object,
    ) -> None:
        super().__init__(
            # Slash commands only: no prefixes at all (an empty string would match every
            # message, when_mentioned every mention), and on_message never parses commands.
            command_prefix=[],
            help_command=None,
            intents=intents(settings.message_content_intent),
            allowed_mentions=discord.AllowedMentions.none(),
            # No message cache: replies carry what the bot needs, and memory stays flat.
            max_messages=None,
            **options,  # type: ignore[arg-type]
        )
        self.settings = settings
        self.store = store
        self.inference = inference
        self.conversation = Conversation(settings, store, inference)
        self.limiter = UserRateLimiter(settings.user_rate, per_server=settings.user_rate_per_server)
        self.force_sync = force_sync
        self.closing = False
        self.tree.error(self.on_app_command_error)

    async def setup_hook(self) -> None:
        """Load the cogs, then sync commands if their definitions changed."""
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        await self.sync_commands(force=self.force_sync)

    async def close(self) -> None:
        """Stop taking new messages, let answers in progress finish, then disconnect.

        The gateway stays open while turns drain (closing it would make discord.py
        reconnect); messages that arrive meanwhile are ignored, as after a disconnect.
        """
        if not self.closing:
            self.closing = True
            await self.conversation.drain(SHUTDOWN_GRACE)
        await super().close()

    async def on_message(self, message: discord.Message, /) -> None:
        """No prefix commands: the chat cog handles messages."""

    def command_signature(self) -> str:
        """A hash of the slash-command definitions and where they are synced."""
        payload = {
            "guild": self.settings.sync_guild_id,
            "commands": sorted(
                (command.to_dict(self.tree) for command in self.tree.get_commands()),
                key=lambda c: str(c["name"]),
            ),
        }
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    async def sync_commands(self, *, force: bool = False) -> bool:
        """Sync slash commands with Discord when they changed (or when forced)."""
        signature = self.command_signature()
        if not force and await self.store.get_meta(SYNC_HASH_KEY) == signature:
            log.info("Slash commands unchanged since the last sync; not syncing")
            return False
        guild = discord.Object(self.settings.sync_guild_id) if self.settings.sync_guild_id else None
        if guild is not None:
            self.tree.copy_global_to(guild=guild)
        synced = await self.tree.sync(guild=guild)
        await self.store.set_meta(SYNC_HASH_KEY, signature)
        where = f"server {guild.id}" if guild else "all servers"
        log.info("Synced %d slash commands to %s", len(synced), where)
        return True

    async def on_app_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        """Tell the user what went wrong with a slash command; log what is unexpected."""
        if isinstance(error, app_commands.MissingPermissions):
            text = "You need the **Manage Messages** permission in this channel to do that."
        elif isinstance(error, app_commands.CheckFailure):
            text = "You can't use this command here."
        else:
            log.error("Slash command %s failed", interaction.command, exc_info=error)
            text = "Something went wrong with that command. It has been logged."
        if interaction.response.is_done():
            await interaction.followup.send(text, ephemeral=True)
        else:
            await interaction.response.send_message(text, ephemeral=True)


def can_manage_channel() -> object:
    """A check: Manage Messages in server channels; anyone in a DM with the bot."""

    def predicate(interaction: discord.Interaction) -> bool:
        if interaction.guild_id is None:
            return True
        if interaction.permissions.manage_messages:
            return True
        raise app_commands.MissingPermissions(["manage_messages"])

    return app_commands.check(predicate)
