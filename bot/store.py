"""Conversation history and per-channel settings in SQLite (aiosqlite)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
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
    WHERE channel_id = ?
      AND id > COALESCE((SELECT reset_after_id FROM channels WHERE channel_id = ?), 0)
    ORDER BY id DESC
    LIMIT ?
"""
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


@dataclass(frozen=True)
class ChannelState:
    """A channel's settings: its chosen model and where its context starts."""

    channel_id: int
    model: str | None = None
    context_reset_at: str | None = None
    reset_after_id: int = 0


class Store:
    """The bot's SQLite database: one connection, writes serialised, reads concurrent."""

    def __init__(self, db: aiosqlite.Connection, path: Path | str) -> None:
        self._db = db
        self.path = path
        # One connection is shared: a transaction must not interleave with another's writes.
        self._write_lock = asyncio.Lock()

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
        log.info("Database ready at %s", path)
        return cls(db, path)

    async def close(self) -> None:
        """Close the connection (pending writes are already committed)."""
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

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._write_lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            await self._db.execute("COMMIT")

    async def channel(self, channel_id: int) -> ChannelState:
        """A channel's settings (defaults for a channel never seen)."""
        async with self._db.execute(
            "SELECT model, context_reset_at, reset_after_id FROM channels WHERE channel_id = ?",
            (channel_id,),
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            return ChannelState(channel_id)
        return ChannelState(channel_id, row[0], row[1], int(row[2]))

    async def set_model(self, channel_id: int, model: str) -> None:
        """Choose the model a channel talks to."""
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO channels (channel_id, model, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (channel_id) DO UPDATE SET model = excluded.model, "
                "updated_at = excluded.updated_at",
                (channel_id, model, utcnow()),
            )

    async def reset(self, channel_id: int) -> int:
        """Start the channel's context afresh; return how many messages were set aside."""
        now = utcnow()
        async with self._transaction() as db:
            state = await self.channel(channel_id)
            async with db.execute(
                "SELECT COUNT(*), MAX(id) FROM messages WHERE channel_id = ? AND id > ?",
                (channel_id, state.reset_after_id),
            ) as cursor:
                row = await cursor.fetchone()
            count, last_id = (int(row[0]), row[1]) if row else (0, None)
            await db.execute(
                "INSERT INTO channels (channel_id, context_reset_at, reset_after_id, updated_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (channel_id) DO UPDATE SET "
                "context_reset_at = excluded.context_reset_at, "
                "reset_after_id = excluded.reset_after_id, updated_at = excluded.updated_at",
                (channel_id, now, last_id or state.reset_after_id, now),
            )
        return count

    async def context(self, channel_id: int, limit: int) -> list[StoredMessage]:
        """The newest messages after the channel's last reset, oldest first."""
        async with self._db.execute(_CONTEXT_SQL, (channel_id, channel_id, limit)) as cursor:
            rows = await cursor.fetchall()
        return [_message(row) for row in reversed(list(rows))]

    async def history(self, channel_id: int) -> list[StoredMessage]:
        """Every message ever recorded in a channel, reset or not, oldest first."""
        async with self._db.execute(_HISTORY_SQL, (channel_id,)) as cursor:
            rows = await cursor.fetchall()
        return [_message(row) for row in rows]

    async def record_turn(self, channel_id: int, messages: Sequence[NewMessage]) -> list[int]:
        """Record a user message and its reply together, or nothing; return the row ids."""
        now = utcnow()
        ids: list[int] = []
        async with self._transaction() as db:
            for message in messages:
                cursor = await db.execute(
                    "INSERT INTO messages (channel_id, discord_message_id, author_id, "
                    "author_name, role, content, model, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        channel_id,
                        message.discord_message_id,
                        message.author_id,
                        message.author_name,
                        message.role,
                        message.content,
                        message.model,
                        now,
                    ),
                )
                ids.append(int(cursor.lastrowid or 0))
                await cursor.close()
        return ids

    async def get_meta(self, key: str) -> str | None:
        """A bookkeeping value (for example the hash of the last synced commands)."""
        async with self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)) as cursor:
            row = await cursor.fetchone()
        return str(row[0]) if row else None

    async def set_meta(self, key: str, value: str) -> None:
        """Store a bookkeeping value."""
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )


def _message(row: Any) -> StoredMessage:
    return StoredMessage(*row)
