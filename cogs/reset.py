"""Reset: start a channel's context afresh without deleting anything."""

from __future__ import annotations

import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot.client import HFCord, can_manage_channel

log = logging.getLogger(__name__)


def reset_message(who: str, set_aside: int) -> str:
    """What the channel reads after a reset."""
    if set_aside == 0:
        return f"{who} reset the conversation. There was nothing to set aside."
    noun = "message" if set_aside == 1 else "messages"
    return (
        f"{who} reset the conversation: {set_aside} earlier {noun} set aside. "
        "They stay in the history but are no longer sent to the model."
    )


class Reset(commands.Cog):
    """The /reset command."""

    def __init__(self, bot: HFCord) -> None:
        self.bot = bot

    @app_commands.command(name="reset")
    @app_commands.default_permissions(manage_messages=True)
    @can_manage_channel()
    async def reset(self, interaction: discord.Interaction) -> None:
        """Start this channel's conversation afresh; earlier messages are kept, not sent."""
        channel_id = interaction.channel_id or 0
        set_aside = await self.bot.store.reset(channel_id)
        log.info("Channel %d reset; %d messages set aside", channel_id, set_aside)
        await interaction.response.send_message(
            reset_message(interaction.user.display_name, set_aside)
        )


async def setup(bot: HFCord) -> None:
    """Load the reset cog."""
    await bot.add_cog(Reset(bot))
