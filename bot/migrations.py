"""Ordered, append-only schema migrations tracked by PRAGMA user_version.

Never edit or reorder a migration that has shipped: append a new one.
"""

from __future__ import annotations

import logging

import aiosqlite

log = logging.getLogger(__name__)

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: messages, per-channel state, and a small key/value table for bookkeeping.
    (
        """
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            channel_id INTEGER NOT NULL,
            discord_message_id INTEGER,
            author_id INTEGER,
            author_name TEXT,
            role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
            content TEXT NOT NULL,
            model TEXT,
            created_at TEXT NOT NULL
        )
        """,
        "CREATE INDEX messages_by_channel ON messages (channel_id, id)",
        """
        CREATE TABLE channels (
            channel_id INTEGER PRIMARY KEY,
            model TEXT,
            context_reset_at TEXT,
            reset_after_id INTEGER NOT NULL DEFAULT 0,
            updated_at TEXT NOT NULL
        )
        """,
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)


async def schema_version(db: aiosqlite.Connection) -> int:
    """The version recorded in the database file (0 for a blank database)."""
    async with db.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def migrate(db: aiosqlite.Connection) -> int:
    """Apply pending migrations, each atomically with its version bump; return the version."""
    current = await schema_version(db)
    if current > SCHEMA_VERSION:
        raise RuntimeError(
            f"database schema {current} is newer than this hfcord knows "
            f"({SCHEMA_VERSION}): upgrade hfcord"
        )
    for version in range(current + 1, SCHEMA_VERSION + 1):
        await db.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[version - 1]:
                await db.execute(statement)
            # PRAGMA takes no placeholders; version is an int from our own table.
            await db.execute(f"PRAGMA user_version = {int(version)}")
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        await db.execute("COMMIT")
        log.info("Database migrated to schema version %d", version)
    return SCHEMA_VERSION
