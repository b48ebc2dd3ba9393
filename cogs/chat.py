"""Chat: answer mentions, replies to the bot and DMs with the channel's model."""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import PurePath

import discord
from discord.ext import commands

from bot.client import HFCord
from bot.conversation import Answer, ChannelBusy, Prompt
from bot.inference import InferenceError, ModelLoading
from bot.render import clean_input, split_message, strip_mention, truncate

log = logging.getLogger(__name__)

NO_PINGS = discord.AllowedMentions.none()
EMPTY_NOTE = "You mentioned me without a question: write your message after the mention."
# Without the message content intent, Discord blanks replies that do not @-mention the bot.
UNREAD_REPLY_NOTE = (
    "I could not read your reply: Discord only shows me replies that keep the @mention on. "
    "Reply again with the mention switched on, or mention me directly."
)
ATTACHMENT_NOTE = "There is no text in your message that I can read."
BUSY_NOTE = "I'm still answering earlier messages in this channel. Send this again in a moment."
RATE_NOTE = "You're sending messages faster than {limit} a minute. Wait a little, then try again."
WARMING_NOTE = (
    "⏳ **{model}** is warming up: its endpoint was asleep and is starting, which can take "
    "a minute or two. Your answer will appear here."
)
# The rate-limit notice removes itself: it should not clutter the channel.
RATE_NOTE_LIFETIME = 15.0
# Channels whose refusals were logged; forgotten wholesale past this size.
MAX_REFUSALS_REMEMBERED = 10_000
TEXT_TYPES = ("text/", "application/json", "application/xml", "application/x-yaml")
TEXT_SUFFIXES = frozenset(
    [
        ".txt",
        ".md",
        ".rst",
        ".csv",
        ".tsv",
        ".log",
        ".json",
        ".yaml",
        ".yml",
        ".toml",
        ".ini",
        ".cfg",
        ".xml",
        ".html",
        ".css",
        ".js",
        ".ts",
        ".py",
        ".rs",
        ".go",
        ".java",
        ".kt",
        ".c",
        ".h",
        ".cpp",
        ".hpp",
        ".cs",
        ".rb",
        ".php",
        ".sh",
        ".sql",
        ".tex",
    ]
)
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


def is_text_file(attachment: discord.Attachment) -> bool:
    """Whether an attachment is worth reading as text."""
    content_type = (attachment.content_type or "").split(";")[0].strip().lower()
    if content_type.startswith(TEXT_TYPES):
        return True
    return PurePath(attachment.filename).suffix.lower() in TEXT_SUFFIXES


@dataclass
class TurnReport:
    """What happened in one turn, for the log line."""

    channel_id: int
    started: float = field(default_factory=time.monotonic)
    model: str = "-"
    retries: int = 0
    prompt_chars: int = 0
    reply_chars: int = 0
    model_seconds: float = 0.0
    outcome: str = "ok"

    def log(self) -> None:
        """One INFO line per turn: ids, model, sizes, timings and outcome; never content."""
        log.info(
            "Turn channel=%d model=%s outcome=%s retries=%d prompt_chars=%d reply_chars=%d "
            "model_s=%.2f total_s=%.2f",
            self.channel_id,
            self.model,
            self.outcome,
            self.retries,
            self.prompt_chars,
            self.reply_chars,
            self.model_seconds,
            time.monotonic() - self.started,
        )


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
        # A reply to a deleted message resolves to DeletedReferencedMessage: not addressed.
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
        """Answer a message addressed to the bot, one turn at a time per channel."""
        if not self.addressed(message) or self.bot.closing:
            return
        guild_id = message.guild.id if message.guild else None
        limiter = self.bot.limiter
        if not await limiter.allow(message.author.id, guild_id):
            TurnReport(message.channel.id, outcome="rate-limited").log()
            if limiter.should_warn(message.author.id, guild_id):
                text = RATE_NOTE.format(limit=limiter.per_minute)
                await self.post(message, text, delete_after=RATE_NOTE_LIFETIME)
            return
        report = TurnReport(message.channel.id)
        try:
            # Entered before any await, so turns start in the order messages arrived.
            async with self.bot.conversation.turn(message.channel.id):
                await self.take_turn(message, report)
        except ChannelBusy:
            report.outcome = "busy"
            await self.post(message, BUSY_NOTE)
        report.log()

    async def take_turn(self, message: discord.Message, report: TurnReport) -> None:
        """Read the message, ask the model, post the answer, record the turn."""
        assert self.bot.user is not None
        text, notes = await self.read_message(message)
        if not text:
            report.outcome = "empty"
            await self.post(message, self.empty_note(message), notes=notes)
            return
        prompt = Prompt(
            channel_id=message.channel.id,
            message_id=message.id,
            author_id=message.author.id,
            author_name=message.author.display_name,
            content=text,
        )
        report.prompt_chars = len(text)
        notice: discord.Message | None = None

        async def on_retry(error: InferenceError, attempt: int, delay: float) -> None:
            nonlocal notice
            report.retries = attempt
            if notice is None and isinstance(error, ModelLoading):
                notice = await self.send(message, WARMING_NOTE.format(model=error.model))

        conversation = self.bot.conversation
        try:
            async with message.channel.typing():
                answer = await conversation.answer(prompt, on_retry=on_retry)
        except discord.HTTPException as error:
            # Typing is refused where the bot may not post: don't call the model for nothing.
            report.outcome = "cannot-post"
            self.cannot_post(message, error)
            return
        except InferenceError as error:
            report.outcome = type(error).__name__
            report.model = error.model_name or report.model
            log.warning(
                "Model call in channel %d failed: %s (HTTP %s)",
                prompt.channel_id,
                type(error).__name__,
                error.status,
            )
            await self.post(message, f"⚠️ {error}", replace=notice)
            return
        self.fill_report(report, answer)
        reply_id = await self.post(message, answer.text, notes=notes, replace=notice)
        if reply_id is None:
            report.outcome = "not-posted"
            return
        await conversation.record(answer, reply_id)

    @staticmethod
    def fill_report(report: TurnReport, answer: Answer) -> None:
        """Copy an answer's figures into the turn's report."""
        report.model = answer.model.name
        report.retries = answer.completion.retries
        report.reply_chars = len(answer.text)
        report.model_seconds = answer.completion.latency

    async def read_message(self, message: discord.Message) -> tuple[str, list[str]]:
        """The prompt text (with readable text files) and notes for the user about it."""
        assert self.bot.user is not None
        parts = [readable_content(message, self.bot.user.id)]
        notes: list[str] = []
        for attachment in message.attachments:
            content, problem = await self.read_attachment(attachment)
            if content is not None:
                parts.append(f"[Attached file {attachment.filename}]\n{content}")
            else:
                notes.append(f"I skipped {attachment.filename}: {problem}.")
        text = "\n\n".join(p for p in parts if p)
        room = self.bot.conversation.prompt_room()
        if len(text) > room:
            text = truncate(text, room)
            notes.append(f"Your message was cut to its first {room:,} characters to fit.")
        return text, notes

    async def read_attachment(self, attachment: discord.Attachment) -> tuple[str | None, str]:
        """A text attachment's content, or None and the reason it was not read."""
        limit = self.bot.settings.attachment_bytes
        if not is_text_file(attachment):
            return None, "I can only read text files"
        if attachment.size > limit:
            return None, f"it is larger than {limit // 1000:,} KB"
        try:
            data = await attachment.read()
        except discord.HTTPException:
            return None, "it could not be downloaded"
        try:
            return clean_input(data[:limit].decode("utf-8")), ""
        except UnicodeDecodeError:
            return None, "it is not UTF-8 text"

    async def send(
        self,
        message: discord.Message,
        text: str,
        *,
        reply: bool = True,
        delete_after: float | None = None,
    ) -> discord.Message | None:
        """Post one message in message's channel (as a reply), never pinging anyone."""
        try:
            if reply:
                return await message.channel.send(
                    text,
                    # A deleted target makes Discord send a plain message instead of failing.
                    reference=message.to_reference(fail_if_not_exists=False),
                    allowed_mentions=NO_PINGS,
                    mention_author=False,
                    delete_after=delete_after,
                )
            return await message.channel.send(
                text, allowed_mentions=NO_PINGS, delete_after=delete_after
            )
        except discord.HTTPException as error:
            self.cannot_post(message, error)
            return None

    async def post(
        self,
        message: discord.Message,
        text: str,
        *,
        notes: list[str] | None = None,
        replace: discord.Message | None = None,
        delete_after: float | None = None,
    ) -> int | None:
        """Reply with text split for Discord (replacing a notice if given); the first id."""
        if notes:
            text += "\n" + "\n".join(f"-# {note}" for note in notes)
        chunks = split_message(text)
        first: discord.Message | None = None
        if replace is not None:
            try:
                first = await replace.edit(content=chunks[0], allowed_mentions=NO_PINGS)
            except discord.HTTPException:
                first = None  # the notice was deleted: post the answer afresh
        if first is None:
            first = await self.send(message, chunks[0], delete_after=delete_after)
            if first is None:
                return None
        for chunk in chunks[1:]:
            if await self.send(message, chunk, reply=False) is None:
                break
        return first.id

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


async def setup(bot: HFCord) -> None:
    """Load the chat cog."""
    await bot.add_cog(Chat(bot))
