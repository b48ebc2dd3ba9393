"""Chat: answer mentions, replies to the bot and DMs with the channel's model."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import PurePath

import discord
from discord.ext import commands

from bot.client import HFCord
from bot.conversation import ChannelBusy, Prompt
from bot.inference import InferenceError, StreamInterrupted
from bot.render import DISCORD_LIMIT, clean_input, split_message, strip_mention, truncate
from bot.streaming import Piece

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
THINKING_STATUS = "💭 Thinking…"
# Shown at the end of a message while the answer is still being written.
CURSOR = " ▌"
SHUTDOWN_NOTE = "⚠️ Cut off: the bot was restarting. Ask again in a moment."
# Answers quicker than this show no typing indicator (it would outlive the answer).
TYPING_DELAY = 0.5
TYPING_REFRESH = 8.0
# Seconds between edits of a growing message: Discord allows about 5 edits per 5 s per
# channel, and discord.py waits on its bucket headers when an edit would exceed that.
EDIT_INTERVAL = 1.0
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


def with_notes(text: str, notes: list[str]) -> str:
    """Text followed by notes in Discord's small print."""
    return "\n".join([text, *(f"-# {note}" for note in notes)])


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
        """Read the message, then let the conversation answer it through a LiveReply."""
        text, notes = await self.read_message(message)
        if not text:
            report.outcome = "empty"
            await self.post(message, self.empty_note(message), notes=notes)
            return
        if not self.can_post(message):
            report.outcome = "cannot-post"
            return
        prompt = Prompt(
            channel_id=message.channel.id,
            message_id=message.id,
            author_id=message.author.id,
            author_name=message.author.display_name,
            content=text,
        )
        report.prompt_chars = len(text)
        live = LiveReply(self, message, notes)
        typing = asyncio.create_task(self.keep_typing(message, live))
        try:
            answer = await self.bot.conversation.respond(prompt, live)
        except InferenceError as error:
            report.outcome = type(error).__name__
            report.model = error.model_name or report.model
            log.warning(
                "Model call in channel %d failed: %s (HTTP %s)",
                prompt.channel_id,
                type(error).__name__,
                error.status,
            )
            await live.fail(error)
            return
        except asyncio.CancelledError:
            # Shutdown cancelled the turn: don't leave a half-written answer with its cursor.
            if live.started:
                note = with_notes(live.text, [SHUTDOWN_NOTE])
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(live.show(live.render(note, final=True)), 2)
            raise
        finally:
            typing.cancel()
        if answer is None:
            report.outcome = "not-posted"
            return
        report.model = answer.model.name
        report.retries = answer.completion.retries
        report.reply_chars = len(answer.text)
        report.model_seconds = answer.completion.latency

    def can_post(self, message: discord.Message) -> bool:
        """Whether the bot may post in the message's channel, as far as the cache knows."""
        channel = message.channel
        if message.guild is None:
            return True
        if isinstance(channel, discord.Thread):
            allowed = channel.permissions_for(message.guild.me).send_messages_in_threads
        elif isinstance(channel, discord.abc.GuildChannel):
            allowed = channel.permissions_for(message.guild.me).send_messages
        else:
            allowed = True
        if allowed:
            return True
        self.cannot_post(message, None)
        return False

    async def keep_typing(self, message: discord.Message, live: LiveReply) -> None:
        """Show "typing…" while an answer takes longer than a moment, until it is posted."""
        await asyncio.sleep(TYPING_DELAY)
        while True:
            # Held while the request is in flight: the reply waits for it, so "typing…" can
            # never arrive after the answer and linger there.
            async with live.typing:
                if live.started:
                    return
                try:
                    await message.channel.typing()
                except discord.HTTPException as error:
                    self.cannot_post(message, error)
                    return
            # Discord shows the indicator for about 10 s, or until the bot posts.
            await asyncio.sleep(TYPING_REFRESH)

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
        delete_after: float | None = None,
    ) -> None:
        """Reply with a short note (split for Discord if it must be)."""
        for index, chunk in enumerate(split_message(with_notes(text, notes or []))):
            sent = await self.send(message, chunk, reply=index == 0, delete_after=delete_after)
            if sent is None:
                return

    def cannot_post(self, message: discord.Message, error: discord.HTTPException | None) -> None:
        """Log a refused post (or a missing permission), once per channel and kind."""
        key = (message.channel.id, error.code or error.status if error else 0)
        if key in self._refused:
            return
        if len(self._refused) >= MAX_REFUSALS_REMEMBERED:
            self._refused.clear()
        self._refused.add(key)
        if error is None or isinstance(error, discord.Forbidden):
            why = "the bot lacks permission to post there"
        elif isinstance(error, discord.NotFound):
            why = "the channel is gone"
        else:
            why = "Discord refused the message"
        status = f"HTTP {error.status} (code {error.code})" if error else "no Send Messages"
        log.warning("Cannot post in channel %d: %s: %s", message.channel.id, status, why)


class LiveReply:
    """The bot's reply to one message: a status, then an answer that grows, then final.

    Messages are posted as text arrives and edited at most once per EDIT_INTERVAL each;
    past 2000 characters the reply continues in a new message, split exactly as a
    non-streamed answer would be, so the final messages are the same either way.
    """

    def __init__(self, cog: Chat, source: discord.Message, notes: list[str]) -> None:
        self.cog = cog
        self.source = source
        self.notes = notes
        self.typing = asyncio.Lock()
        self.messages: list[discord.Message] = []
        self.shown: list[str] = []
        self.text = ""
        self.thinking = False
        self.broken = False

    @property
    def started(self) -> bool:
        """Whether anything was posted yet."""
        return bool(self.messages)

    async def warming_up(self, model: str) -> None:
        """Show that the model's endpoint is starting; the answer will replace it."""
        if not self.started:
            await self.show([WARMING_NOTE.format(model=model)])

    async def finish(self, text: str) -> int | None:
        """Show the whole answer (with any notes); the first message's id if all went up."""
        await self.show(self.render(with_notes(text, self.notes), final=True))
        if self.broken or not self.messages:
            return None
        return self.messages[0].id

    async def fail(self, error: InferenceError) -> None:
        """Show why there is no answer; a stream cut midway keeps its text, marked."""
        if isinstance(error, StreamInterrupted) and self.text.strip():
            # The partial answer stays, marked; it is not recorded (see README).
            cut = f"⚠️ Cut off: {error.model} {error.what} ({error.detail})."
            await self.show(self.render(with_notes(self.text, [cut]), final=True))
        else:
            await self.show([f"⚠️ {error}"])

    @staticmethod
    def render(text: str, *, final: bool, status: str | None = None) -> list[str]:
        """The messages for text so far: Discord-sized, with a cursor while unfinished."""
        chunks = split_message(text.strip())
        if not chunks:
            return [status] if status else []
        if not final and len(chunks[-1]) + len(CURSOR) <= DISCORD_LIMIT:
            chunks[-1] += CURSOR
        return chunks

    async def show(self, contents: list[str]) -> None:
        """Make the posted messages read contents: edit what changed, post what is new."""
        for index, content in enumerate(contents):
            if self.broken:
                return
            if index == len(self.messages):
                if index == 0:
                    async with self.typing:
                        sent = await self.cog.send(self.source, content)
                else:
                    sent = await self.cog.send(self.source, content, reply=False)
                if sent is None:
                    self.broken = True
                    return
                self.messages.append(sent)
                self.shown.append(content)
            elif self.shown[index] != content:
                await self.edit(index, content)
        for extra in self.messages[len(contents) :]:
            with contextlib.suppress(discord.HTTPException):
                await extra.delete()
        del self.messages[len(contents) :], self.shown[len(contents) :]

    async def edit(self, index: int, content: str) -> None:
        """Edit one message; one deleted meanwhile is posted again."""
        try:
            self.messages[index] = await self.messages[index].edit(
                content=content, allowed_mentions=NO_PINGS
            )
        except discord.NotFound:
            sent = await self.cog.send(self.source, content, reply=index == 0)
            if sent is None:
                self.broken = True
                return
            self.messages[index] = sent
        except discord.HTTPException as error:
            self.cog.cannot_post(self.source, error)
            self.broken = True
            return
        self.shown[index] = content

    async def stream(self, pieces: AsyncIterator[Piece]) -> str:
        """Show a streamed answer as it grows; return the whole answer text."""
        changed = asyncio.Event()

        async def read() -> None:
            async for piece in pieces:
                if piece.kind == "text":
                    self.text += piece.text
                else:
                    self.thinking = True
                changed.set()

        reader = asyncio.create_task(read())
        try:
            last_edit = -EDIT_INTERVAL
            while not reader.done():
                waiter = asyncio.ensure_future(changed.wait())
                await asyncio.wait({reader, waiter}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if reader.done():
                    break
                # The first text goes up at once; then each message is edited once a second.
                if self.started:
                    pause = last_edit + EDIT_INTERVAL - time.monotonic()
                    if pause > 0:
                        await asyncio.wait({reader}, timeout=pause)
                        if reader.done():
                            break
                changed.clear()
                status = THINKING_STATUS if self.thinking else None
                await self.show(self.render(self.text, final=False, status=status))
                last_edit = time.monotonic()
                if self.broken:
                    break  # Discord refuses the reply: stop reading (and paying for) the stream
            if not self.broken:
                reader.result()
        finally:
            reader.cancel()
        return self.text.strip()


async def setup(bot: HFCord) -> None:
    """Load the chat cog."""
    await bot.add_cog(Chat(bot))
