"""One conversational turn: the context sent to the model, the call, and the record."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from bot.config import ModelSpec, Settings
from bot.inference import (
    ChatMessage,
    Completion,
    EmptyAnswer,
    InferenceClient,
    InferenceError,
    ModelLoading,
)
from bot.store import ChannelState, NewMessage, Store, StoredMessage
from bot.streaming import Piece

log = logging.getLogger(__name__)

# How long cancelled turns get to unwind at shutdown.
CANCEL_GRACE = 2.0
# A new message always gets at least this much room, however long the system prompt.
MIN_PROMPT_ROOM = 1000


class ChannelBusy(Exception):
    """Too many messages are already waiting for an answer in this channel."""


@dataclass(frozen=True)
class Prompt:
    """A user's message to the bot, free of Discord types."""

    channel_id: int
    message_id: int
    author_id: int
    author_name: str
    content: str


@dataclass(frozen=True)
class Context:
    """What a turn sends: the model, the messages, and the reset point they start after."""

    model: ModelSpec
    messages: list[ChatMessage]
    reset_after_id: int


@dataclass(frozen=True)
class Answer:
    """The model's reply to a prompt, not yet recorded."""

    prompt: Prompt
    model: ModelSpec
    completion: Completion
    context_size: int

    @property
    def text(self) -> str:
        """The reply text."""
        return self.completion.text


def speaker_line(name: str | None, content: str) -> str:
    """A user turn as the model sees it in a channel with several people."""
    return f"{name}: {content}" if name else content


def build_messages(
    system_prompt: str,
    history: Sequence[StoredMessage],
    prompt: Prompt,
    *,
    max_chars: int,
) -> list[ChatMessage]:
    """System prompt, then the newest history that fits the budget, then the new message."""
    authors = {m.author_id for m in history if m.role == "user"} | {prompt.author_id}
    named = len(authors) > 1

    def content(message: StoredMessage) -> str:
        if message.role == "user" and named:
            return speaker_line(message.author_name, message.content)
        return message.content

    new_text = speaker_line(prompt.author_name, prompt.content) if named else prompt.content
    budget = max_chars - len(system_prompt) - len(new_text)
    kept: list[ChatMessage] = []
    for message in reversed(history):
        text = content(message)
        if len(text) > budget:
            break
        budget -= len(text)
        kept.append({"role": message.role, "content": text})
    kept.reverse()
    # Chat templates expect user/assistant alternation starting with a user turn.
    while kept and kept[0]["role"] != "user":
        kept.pop(0)
    return [
        {"role": "system", "content": system_prompt},
        *kept,
        {"role": "user", "content": new_text},
    ]


class Reply(Protocol):
    """Where a turn's answer is shown; the chat cog implements it with Discord messages."""

    async def warming_up(self, model: str) -> None:
        """Say that a model's endpoint is starting (called once at most)."""

    async def stream(self, pieces: AsyncIterator[Piece]) -> str:
        """Show a streamed answer as it grows; return the whole text."""
        ...

    async def finish(self, text: str) -> int | None:
        """Show the final answer; return the id of its first message, None if not shown."""
        ...


class Conversation:
    """Turns in channels: one at a time per channel, channels independent."""

    def __init__(self, settings: Settings, store: Store, inference: InferenceClient) -> None:
        self.settings = settings
        self.store = store
        self.inference = inference
        # Idle channels hold no lock: an entry lives only while some turn uses it.
        self._locks: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()
        # Turns running or waiting, per channel; only channels with some are kept.
        self._pending: dict[int, int] = {}
        self._tasks: set[asyncio.Task[object]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.asynccontextmanager
    async def turn(self, channel_id: int) -> AsyncIterator[None]:
        """Hold the channel for one turn, in arrival order; raise ChannelBusy when full."""
        pending = self._pending.get(channel_id, 0)
        if pending >= self.settings.channel_queue:
            raise ChannelBusy(channel_id)
        self._pending[channel_id] = pending + 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._idle.clear()
        try:
            async with self.lock(channel_id):
                yield
        finally:
            self._tasks.discard(task)
            if not self._tasks:
                self._idle.set()
            left = self._pending[channel_id] - 1
            if left:
                self._pending[channel_id] = left
            else:
                del self._pending[channel_id]

    def lock(self, channel_id: int) -> asyncio.Lock:
        """The lock that serialises turns in one channel."""
        lock = self._locks.get(channel_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[channel_id] = lock
        return lock

    async def drain(self, grace: float) -> bool:
        """Wait up to grace seconds for turns in progress, then cancel the rest.

        Returns True when every turn finished on its own. A cancelled turn records nothing
        (unless its write had already begun).
        """
        try:
            await asyncio.wait_for(self._idle.wait(), grace)
            return True
        except TimeoutError:
            pass
        log.warning("Cancelling %d turn(s) still running at shutdown", len(self._tasks))
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), CANCEL_GRACE)
        return False

    async def model_for(self, channel_id: int) -> ModelSpec:
        """The model a channel talks to (the default until someone picks one)."""
        return self._model(await self.store.channel(channel_id))

    def _model(self, state: ChannelState) -> ModelSpec:
        if state.model is not None and state.model not in self.settings.models:
            log.warning(
                "Channel %d uses model %r, no longer in the catalogue; using the default",
                state.channel_id,
                state.model,
            )
        return self.settings.model(state.model)

    def prompt_room(self) -> int:
        """How many characters a new message may have: the budget less the system prompt."""
        return max(MIN_PROMPT_ROOM, self.settings.history_chars - len(self.settings.system_prompt))

    async def context_for(self, prompt: Prompt) -> Context:
        """The channel's model and the messages to send it for this prompt."""
        state = await self.store.channel(prompt.channel_id)
        spec = self._model(state)
        history = await self.store.context(prompt.channel_id, self.settings.history_messages)
        messages = build_messages(
            self.settings.system_prompt, history, prompt, max_chars=self.settings.history_chars
        )
        return Context(spec, messages, state.reset_after_id)

    async def respond(self, prompt: Prompt, reply: Reply) -> Answer | None:
        """One turn: ask the channel's model, show the answer, record both messages.

        Raises InferenceError when the model fails (nothing is recorded); returns None when
        the answer could not be shown (nothing is recorded either).
        """
        context = await self.context_for(prompt)
        spec = context.model
        retries = 0

        async def on_retry(error: InferenceError, attempt: int, delay: float) -> None:
            nonlocal retries
            retries = attempt
            if attempt == 1 and isinstance(error, ModelLoading):
                await reply.warming_up(error.model)

        started = time.monotonic()
        if spec.streams(self.settings.streaming):
            pieces = self.inference.stream(spec, context.messages, on_retry=on_retry)
            text = await reply.stream(pieces)
            completion = Completion(text, spec.name, time.monotonic() - started, retries=retries)
        else:
            completion = await self.inference.complete(spec, context.messages, on_retry=on_retry)
        if not completion.text.strip():
            raise EmptyAnswer(spec.label)
        answer = Answer(prompt, spec, completion, context_size=len(context.messages))
        reply_id = await reply.finish(completion.text)
        if reply_id is None:
            return None
        await self.record(answer, reply_id, context.reset_after_id)
        return answer

    async def record(
        self, answer: Answer, reply_message_id: int | None, reset_after_id: int | None = None
    ) -> None:
        """Write the prompt and its reply to the history, together.

        reset_after_id is the channel's reset point when the turn began: if the channel was
        reset since, the turn belongs before the reset and is set aside with it.
        """
        prompt = answer.prompt
        await self.store.record_turn(
            prompt.channel_id,
            NewMessage(
                role="user",
                content=prompt.content,
                discord_message_id=prompt.message_id,
                author_id=prompt.author_id,
                author_name=prompt.author_name,
            ),
            NewMessage(
                role="assistant",
                content=answer.text,
                discord_message_id=reply_message_id,
                model=answer.model.name,
            ),
            started_after=reset_after_id,
        )
