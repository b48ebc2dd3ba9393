"""Chat: answer mentions, replies to the bot and DMs with the channel's model."""

from __future__ import annotations

import logging
import re
import time

import discord
from discord.ext import commands

from bot.client import HFCord
from bot.conversation import Answer, Prompt
from bot.inference import InferenceError
from bot.render import clean_input, split_message, strip_mention

log = logging.getLogger(__name__)

NO_PINGS = discord.AllowedMentions.none()
EMPTY_NOTE = "You mentioned me without a question: write your message after the mention."
# Without the message content intent, Discord blanks replies that do not @-mention the bot.
UNREAD_REPLY_NOTE = (
    "I could not read your reply: Discord only shows me replies that keep the @mention on. "
    "Reply again with the mention switched on, or mention me directly."
)
ATTACHMENT_NOTE = (
    "I can only read the text of a message, and yours has none: "
    "paste the text into the message itself."
)
# Channels whose refusals were logged; forgotten wholesale past this size.
MAX_REFUSALS_REMEMBERED = 10_000
_USER_MENTION = re.compile(r"<@!?(\d+)>")
_ROLE_MENTION = re.compile(r"<@&(\d+)>")
_CHANNEL_MENTION = re.compile(r"<#(\d+)>")


def readable_content(message: discord.Message, bot_id: int) -> str:
    """The message text for the model: no bot mention, other mentions as names."""
    text = strip_mention(message.content, bot_id)
    users = {u.id: u.display_name for u in message.mentions}
    roles = {r.id: r.name for r in message.role_mentions}
    channels = {c.id: getattr(c, "name", "channel") for c in message.channel_mentions}
    text = _USER_MENTION.sub(lambda m: "@" + users.get(int(m[1]), "someone"), text)
    text = _ROLE_MENTION.sub(lambda m: "@" + roles.get(int(m[1]), "role"), text)
    text = _CHANNEL_MENTION.sub(lambda m: "#" + channels.get(int(m[1]), "channel"), text)
    return clean_input(text)


class Chat(commands.Cog):
    """Answers people who talk to the bot."""

    def __init__(self, bot: HFCord) -> None:
        self.bot = bot
        self._refused: set[tuple[int, int]] = set()

    def addressed(self, message: discord.Message) -> bool:
        """Whether a message asks the bot for an answer."""
        me = self.bot.user
        if me is None or message.author.bot or message.author.id == me.id:
            return False
        if message.guild is None:
            return True
        if me in message.mentions:
            return True
        resolved = message.reference.resolved if message.reference else None
        return isinstance(resolved, discord.Message) and resolved.author.id == me.id

    def empty_note(self, message: discord.Message) -> str:
        """Why a message addressed to the bot has no text to answer."""
        if message.attachments:
            return ATTACHMENT_NOTE
        mentioned = self.bot.user in message.mentions
        if message.guild is not None and not mentioned and not self.bot.intents.message_content:
            return UNREAD_REPLY_NOTE
        return EMPTY_NOTE

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        """Answer a message addressed to the bot."""
        if not self.addressed(message) or self.bot.closing:
            return
        assert self.bot.user is not None
        text = readable_content(message, self.bot.user.id)
        if not text:
            await self.post(message, self.empty_note(message))
            return
        prompt = Prompt(
            channel_id=message.channel.id,
            message_id=message.id,
            author_id=message.author.id,
            author_name=message.author.display_name,
            content=text,
        )
        conversation = self.bot.conversation
        async with conversation.turn(prompt.channel_id):
            started = time.monotonic()
            try:
                async with message.channel.typing():
                    answer = await conversation.answer(prompt)
            except discord.HTTPException as error:
                # Typing is refused where the bot may not post: don't call the model for nothing.
                self.cannot_post(message, error)
                return
            except InferenceError as error:
                log.warning(
                    "Turn in channel %d failed: %s (HTTP %s)",
                    prompt.channel_id,
                    type(error).__name__,
                    error.status,
                )
                await self.post(message, f"⚠️ {error}")
                return
            reply_id = await self.post(message, answer.text)
            if reply_id is not None:
                await conversation.record(answer, reply_id)
            self.log_turn(answer, started, posted=reply_id is not None)

    async def post(self, message: discord.Message, text: str) -> int | None:
        """Reply to message with text split for Discord; return the first reply's id."""
        first: int | None = None
        try:
            for chunk in split_message(text):
                if first is None:
                    sent = await message.channel.send(
                        chunk,
                        reference=message.to_reference(fail_if_not_exists=False),
                        allowed_mentions=NO_PINGS,
                        mention_author=False,
                    )
                    first = sent.id
                else:
                    await message.channel.send(chunk, allowed_mentions=NO_PINGS)
        except discord.HTTPException as error:
            self.cannot_post(message, error)
        return first

    def cannot_post(self, message: discord.Message, error: discord.HTTPException) -> None:
        """Log a refused post, once per channel and kind of error."""
        key = (message.channel.id, error.code or error.status)
        if key in self._refused:
            return
        if len(self._refused) >= MAX_REFUSALS_REMEMBERED:
            self._refused.clear()
        self._refused.add(key)
        if isinstance(error, discord.Forbidden):
            why = "the bot lacks permission to post there"
        elif isinstance(error, discord.NotFound):
            why = "the channel is gone"
        else:
            why = "Discord refused the message"
        log.warning(
            "Cannot post in channel %d: HTTP %d (code %d): %s",
            message.channel.id,
            error.status,
            error.code,
            why,
        )

    @staticmethod
    def log_turn(answer: Answer, started: float, *, posted: bool) -> None:
        """One INFO line per turn: ids, model, sizes and timings, never content."""
        log.info(
            "Turn channel=%d model=%s context=%d prompt_chars=%d reply_chars=%d "
            "model_s=%.2f total_s=%.2f outcome=%s",
            answer.prompt.channel_id,
            answer.model.name,
            answer.context_size,
            len(answer.prompt.content),
            len(answer.text),
            answer.completion.latency,
            time.monotonic() - started,
            "ok" if posted else "not-posted",
        )


async def setup(bot: HFCord) -> None:
    """Load the chat cog."""
    await bot.add_cog(Chat(bot))
