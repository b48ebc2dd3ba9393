"""Conversation history and per-channel settings in SQLite (aiosqlite)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import aiosqlite

from bot.migrations import migrate

log = logging.getLogger(__name__)

Role = Literal["user", "assistant"]

# Columns in StoredMessage's field order. One indexed range scan on (channel_id, id) loads a
# context, however long the history.
_CONTEXT_SQL = """
    SELECT id, channel_id, discord_message_id, author_id, author_name, role, content, model,
           created_at
    FROM messages
    WHERE channel_id = ? AND id > ?
    ORDER BY id DESC
    LIMIT ?
"""
_TURN_SQL = """
    INSERT INTO messages (channel_id, discord_message_id, author_id, author_name, role,
                          content, model, created_at)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?), (?, ?, ?, ?, ?, ?, ?, ?)
"""
_SET_ASIDE_SQL = """
    UPDATE channels SET reset_after_id = (SELECT MAX(id) FROM messages WHERE channel_id = ?)
    WHERE channel_id = ?
"""
_RESET_SQL = """
    INSERT INTO channels (channel_id, context_reset_at, reset_after_id, updated_at)
    VALUES (?, ?, COALESCE((SELECT MAX(id) FROM messages WHERE channel_id = ?), 0), ?)
    ON CONFLICT (channel_id) DO UPDATE SET
        context_reset_at = excluded.context_reset_at,
        reset_after_id = MAX(channels.reset_after_id, excluded.reset_after_id),
        updated_at = excluded.updated_at
    RETURNING model, reset_after_id
"""
# Channel settings kept in memory; the least recently used are dropped past this.
CHANNEL_CACHE = 10_000
_HISTORY_SQL = """
    SELECT id, channel_id, discord_message_id, author_id, author_name, role, content, model,
           created_at
    FROM messages
    WHERE channel_id = ?
    ORDER BY id
"""


def utcnow() -> str:
    """The current time as an ISO-8601 UTC string, sortable as text."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class NewMessage:
    """A message about to be recorded."""

    role: Role
    content: str
    discord_message_id: int | None = None
    author_id: int | None = None
    author_name: str | None = None
    model: str | None = None


@dataclass(frozen=True)
class StoredMessage:
    """A message as kept in the history."""

    id: int
    channel_id: int
    discord_message_id: int | None
    author_id: int | None
    author_name: str | None
    role: Role
    content: str
    model: str | None
    created_at: str


@dataclass
class _PendingTurn:
    """A turn waiting for the next group write."""

    channel_id: int
    values: list[object]
    started_after: int | None
    done: asyncio.Future[None]


@dataclass(frozen=True)
class ChannelState:
    """A channel's settings: its chosen model and where its context starts."""

    channel_id: int
    model: str | None = None
    context_reset_at: str | None = None
    reset_after_id: int = 0


class Store:
    """The bot's SQLite database: one connection, writes serialised, reads concurrent.

    Each read and each single-statement write is one round trip to aiosqlite's thread;
    channel settings are cached (write-through), since every turn needs them.
    """

    def __init__(
        self, db: aiosqlite.Connection, path: Path | str, reader: aiosqlite.Connection | None = None
    ) -> None:
        self._db = db
        # WAL lets a second connection (with its own thread) read while the first writes:
        # loading a context never queues behind a batch of writes.
        self._reader = reader or db
        self.path = path
        # One connection is shared: a transaction must not interleave with another's writes.
        self._write_lock = asyncio.Lock()
        self._channels: OrderedDict[int, ChannelState] = OrderedDict()
        self._queue: list[_PendingTurn] = []
        self._flusher: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, path: Path | str) -> Store:
        """Connect, switch to WAL, and bring the schema up to date."""
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path, isolation_level=None)
        try:
            await db.execute("PRAGMA journal_mode = WAL")
            # NORMAL is crash-safe in WAL mode: a killed process loses nothing committed.
            await db.execute("PRAGMA synchronous = NORMAL")
            await db.execute("PRAGMA busy_timeout = 5000")
            await migrate(db)
        except BaseException:
            await db.close()
            raise
        reader = None
        if str(path) != ":memory:":
            reader = await aiosqlite.connect(path, isolation_level=None)
            await reader.execute("PRAGMA query_only = ON")
        log.info("Database ready at %s", path)
        return cls(db, path, reader)

    async def close(self) -> None:
        """Finish queued writes, then close the connection."""
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await self._flusher
        if self._reader is not self._db:
            await self._reader.close()
        await self._db.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _read(self, sql: str, parameters: Sequence[object]) -> list[Any]:
        return list(await self._reader.execute_fetchall(sql, parameters))

    async def _write(self, sql: str, parameters: Sequence[object]) -> list[Any]:
        """One statement, atomic on its own, never inside another coroutine's transaction."""
        async with self._write_lock:
            return list(await self._db.execute_fetchall(sql, parameters))

    async def _rollback(self) -> None:
        # Queued after whatever statement is in flight (aiosqlite runs them in order), and
        # shielded so that a second cancellation cannot leave the transaction open.
        with contextlib.suppress(sqlite3.OperationalError):  # no transaction was open
            await asyncio.shield(self._db.execute("ROLLBACK"))

    def _remember(self, state: ChannelState) -> ChannelState:
        self._channels[state.channel_id] = state
        self._channels.move_to_end(state.channel_id)
        if len(self._channels) > CHANNEL_CACHE:
            self._channels.popitem(last=False)
        return state

    async def channel(self, channel_id: int) -> ChannelState:
        """A channel's settings (defaults for a channel never seen)."""
        cached = self._channels.get(channel_id)
        if cached is not None:
            self._channels.move_to_end(channel_id)
            return cached
        rows = await self._read(
            "SELECT model, context_reset_at, reset_after_id FROM channels WHERE channel_id = ?",
            (channel_id,),
        )
        if not rows:
            return self._remember(ChannelState(channel_id))
        model, reset_at, after = rows[0]
        return self._remember(ChannelState(channel_id, model, reset_at, int(after)))

    async def set_model(self, channel_id: int, model: str) -> None:
        """Choose the model a channel talks to."""
        rows = await self._write(
            "INSERT INTO channels (channel_id, model, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (channel_id) DO UPDATE SET model = excluded.model, "
            "updated_at = excluded.updated_at "
            "RETURNING model, context_reset_at, reset_after_id",
            (channel_id, model, utcnow()),
        )
        model, reset_at, after = rows[0]
        self._remember(ChannelState(channel_id, model, reset_at, int(after)))

    async def reset(self, channel_id: int) -> int:
        """Start the channel's context afresh; return how many messages were set aside."""
        now = utcnow()
        async with self._write_lock:
            await self._flush_locked()  # turns already answered belong before the reset
            before = await self.channel(channel_id)
            # One statement: the new reset point is the channel's newest message, if any.
            rows = await self._db.execute_fetchall(_RESET_SQL, (channel_id, now, channel_id, now))
            model, after = next(iter(rows))
            counted = await self._db.execute_fetchall(
                "SELECT COUNT(*) FROM messages WHERE channel_id = ? AND id > ? AND id <= ?",
                (channel_id, before.reset_after_id, after),
            )
        self._remember(ChannelState(channel_id, model, now, int(after)))
        return int(next(iter(counted))[0])

    async def context(self, channel_id: int, limit: int) -> list[StoredMessage]:
        """The newest messages after the channel's last reset, oldest first."""
        state = await self.channel(channel_id)
        rows = await self._read(_CONTEXT_SQL, (channel_id, state.reset_after_id, limit))
        return [StoredMessage(*row) for row in reversed(rows)]

    async def history(self, channel_id: int) -> list[StoredMessage]:
        """Every message ever recorded in a channel, reset or not, oldest first."""
        rows = await self._read(_HISTORY_SQL, (channel_id,))
        return [StoredMessage(*row) for row in rows]

    async def record_turn(
        self,
        channel_id: int,
        prompt: NewMessage,
        reply: NewMessage,
        *,
        started_after: int | None = None,
    ) -> None:
        """Record a user message and its reply together, or nothing.

        started_after is the channel's reset point when the turn began. If a reset came
        since, the turn is set aside with the rest: it belongs to the old context.
        Turns that arrive while a write is under way are written together in one
        transaction (group commit), so a busy bot makes one write per batch, not per turn.
        """
        now = utcnow()
        values: list[object] = []
        for message in (prompt, reply):
            values += [
                channel_id,
                message.discord_message_id,
                message.author_id,
                message.author_name,
                message.role,
                message.content,
                message.model,
                now,
            ]
        turn = _PendingTurn(
            channel_id, values, started_after, asyncio.get_running_loop().create_future()
        )
        self._queue.append(turn)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        # Shielded: once queued, the turn is written even if this caller is cancelled.
        await asyncio.shield(turn.done)

    async def _flush(self) -> None:
        async with self._write_lock:
            await self._flush_locked()

    async def _flush_locked(self) -> None:
        """Write every queued turn; the caller holds the write lock."""
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                await self._write_turns(batch)
            except sqlite3.Error:
                # One bad turn must not sink the others: write them one at a time.
                for turn in batch:
                    try:
                        await self._write_turns([turn])
                    except sqlite3.Error as error:
                        turn.done.set_exception(error)
                    else:
                        turn.done.set_result(None)
            except BaseException as error:
                for turn in batch:
                    if not turn.done.done():
                        turn.done.set_exception(error)
                raise
            else:
                for turn in batch:
                    turn.done.set_result(None)

    async def _write_turns(self, batch: list[_PendingTurn]) -> None:
        """Write turns in one transaction; set aside those that a reset overtook."""
        aside = []
        for turn in batch:
            state = await self.channel(turn.channel_id)
            if turn.started_after is not None and turn.started_after != state.reset_after_id:
                aside.append(turn.channel_id)
        if len(batch) == 1 and not aside:
            # One statement is atomic by itself: both rows are written, or neither.
            await self._db.execute_fetchall(_TURN_SQL, batch[0].values)
            return
        try:
            await self._db.execute("BEGIN IMMEDIATE")
            await self._db.executemany(_TURN_SQL, [turn.values for turn in batch])
            if aside:
                await self._db.executemany(_SET_ASIDE_SQL, [(c, c) for c in aside])
            await self._db.execute("COMMIT")
        except BaseException:
            await self._rollback()
            raise
        finally:
            for channel_id in aside:
                self._channels.pop(channel_id, None)  # re-read the new reset point next time

    async def get_meta(self, key: str) -> str | None:
        """A bookkeeping value (for example the hash of the last synced commands)."""
        rows = await self._read("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    async def set_meta(self, key: str, value: str) -> None:
        """Store a bookkeeping value."""
        await self._write(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )
