"""Model selection: list the catalogue and choose a channel's model."""

from __future__ import annotations

import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot.client import HFCord, can_manage_channel
from bot.config import ModelSpec
from bot.render import split_message

log = logging.getLogger(__name__)

# Discord shows at most 25 autocomplete choices, each name at most 100 characters.
MAX_CHOICES = 25
MAX_CHOICE_NAME = 100


def choice_name(spec: ModelSpec, *, current: bool) -> str:
    """How a model appears in the autocomplete list."""
    name = f"{spec.label} ({spec.name})" + (" · current" if current else "")
    return name[:MAX_CHOICE_NAME]


def rank_models(models: list[ModelSpec], current: str, typed: str) -> list[ModelSpec]:
    """Models matching what the user typed, the channel's current model first."""
    needle = typed.strip().lower()
    matches = [
        spec
        for spec in models
        if not needle or needle in f"{spec.name} {spec.label} {spec.hub_id}".lower()
    ]
    matches.sort(key=lambda spec: spec.name != current)
    return matches[:MAX_CHOICES]


class Models(
    commands.GroupCog,
    group_name="model",
    group_description="See or change the language model this channel talks to",
):
    """The /model commands."""

    def __init__(self, bot: HFCord) -> None:
        self.bot = bot
        super().__init__()

    @app_commands.command(name="list")
    async def list_models(self, interaction: discord.Interaction) -> None:
        """List the models you can choose, and the one this channel uses."""
        current = await self.bot.conversation.model_for(interaction.channel_id or 0)
        lines = [f"This channel uses **{current.label}**. Models you can choose:"]
        for spec in self.bot.settings.models.values():
            marker = " ← this channel" if spec.name == current.name else ""
            about = f" {spec.description}" if spec.description else ""
            lines.append(f"• `{spec.name}`: **{spec.label}** (`{spec.hub_id}`).{about}{marker}")
        lines.append("Change it with `/model set`.")
        # A long catalogue may not fit one message.
        first, *rest = split_message("\n".join(lines))
        await interaction.response.send_message(first, ephemeral=True)
        for chunk in rest:
            await interaction.followup.send(chunk, ephemeral=True)

    @app_commands.command(name="current")
    async def current_model(self, interaction: discord.Interaction) -> None:
        """Show which model this channel talks to."""
        spec = await self.bot.conversation.model_for(interaction.channel_id or 0)
        await interaction.response.send_message(
            f"This channel talks to **{spec.label}** (`{spec.hub_id}`).", ephemeral=True
        )

    @app_commands.command(name="set")
    @app_commands.describe(name="The model this channel should talk to")
    @can_manage_channel()
    async def set_model(self, interaction: discord.Interaction, name: str) -> None:
        """Switch this channel to another model (needs Manage Messages)."""
        models = self.bot.settings.models
        spec = models.get(name) or next(
            (s for s in models.values() if name.lower() in (s.label.lower(), s.hub_id.lower())),
            None,
        )
        if spec is None:
            known = ", ".join(f"`{n}`" for n in models)
            await interaction.response.send_message(
                f"There is no model called `{name[:100]}`. Choose one of: {known}.",
                ephemeral=True,
            )
            return
        channel_id = interaction.channel_id or 0
        current = await self.bot.conversation.model_for(channel_id)
        if current.name == spec.name:
            await interaction.response.send_message(
                f"This channel already talks to **{spec.label}**.", ephemeral=True
            )
            return
        await self.bot.store.set_model(channel_id, spec.name)
        log.info("Channel %d switched model %s -> %s", channel_id, current.name, spec.name)
        await interaction.response.send_message(
            f"{interaction.user.display_name} switched this channel from **{current.label}** "
            f"to **{spec.label}** (`{spec.hub_id}`). The conversation so far stays in its "
            "context; `/reset` starts afresh."
        )

    @set_model.autocomplete("name")
    async def model_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        """Suggest catalogue models, the channel's current one first."""
        spec = await self.bot.conversation.model_for(interaction.channel_id or 0)
        ranked = rank_models(list(self.bot.settings.models.values()), spec.name, current)
        return [
            app_commands.Choice(name=choice_name(s, current=s.name == spec.name), value=s.name)
            for s in ranked
        ]


async def setup(bot: HFCord) -> None:
    """Load the model-selection cog."""
    await bot.add_cog(Models(bot))
