"""History at scale: context loads and turn writes with 10^3, 10^5 and 10^6 stored messages.

Run: `make bench-history` (or `python -m bench.history`).

Each size is spread over 1000 channels. The database is filled with plain sqlite3 (fast
bulk inserts), then timed through the bot's own Store: loading one channel's context
(HISTORY_MAX_MESSAGES rows after its reset point) and recording a turn.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import tempfile
import time
from pathlib import Path

from bench.common import summary, table
from bot.config import DEFAULT_HISTORY_MESSAGES
from bot.store import NewMessage, Store, utcnow

CHANNELS = 1000
LOADS = 2000
TURNS = 500
TEXT = "A typical chat message of moderate length, asking or answering something. " * 2


def fill(path: Path, messages: int) -> None:
    """Write messages rows over CHANNELS channels, a reset point in every tenth channel."""
    rng = random.Random(7)
    now = utcnow()
    with sqlite3.connect(path) as db:
        rows = (
            (
                rng.randrange(CHANNELS) + 1,
                i,
                rng.randrange(500),
                "someone",
                "user" if i % 2 == 0 else "assistant",
                TEXT,
                None if i % 2 == 0 else "llama-3.2-3b",
                now,
            )
            for i in range(messages)
        )
        db.executemany(
            "INSERT INTO messages (channel_id, discord_message_id, author_id, author_name, "
            "role, content, model, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        resets = [(c, now, messages // 2, now) for c in range(1, CHANNELS + 1, 10)]
        db.executemany(
            "INSERT INTO channels (channel_id, context_reset_at, reset_after_id, updated_at) "
            "VALUES (?, ?, ?, ?)",
            resets,
        )


def database_size(path: Path) -> int:
    """Bytes on disk for a database and its WAL files."""
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


async def measure(messages: int, workdir: Path) -> list[object]:
    """Fill a database with messages rows, then time loads and writes through Store."""
    path = workdir / f"history-{messages}.sqlite3"
    store = await Store.open(path)  # creates the schema
    await store.close()
    started = time.perf_counter()
    fill(path, messages)
    filled = time.perf_counter() - started
    store = await Store.open(path)
    rng = random.Random(11)
    try:
        loads = []
        for _ in range(LOADS):
            channel = rng.randrange(CHANNELS) + 1
            t0 = time.perf_counter()
            await store.context(channel, DEFAULT_HISTORY_MESSAGES)
            loads.append((time.perf_counter() - t0) * 1000)
        writes = []
        for i in range(TURNS):
            channel = rng.randrange(CHANNELS) + 1
            prompt = NewMessage("user", TEXT, i, 1, "someone")
            reply = NewMessage("assistant", TEXT, i + 1, model="llama-3.2-3b")
            t0 = time.perf_counter()
            await store.record_turn(channel, prompt, reply)
            writes.append((time.perf_counter() - t0) * 1000)
    finally:
        await store.close()
    size = database_size(path)
    load_p50, _, load_p99 = summary(loads)
    write_p50, _, write_p99 = summary(writes)
    return [messages, load_p50, load_p99, write_p50, write_p99, size / messages, filled]


async def run(sizes: list[int]) -> list[list[object]]:
    """One row per history size."""
    with tempfile.TemporaryDirectory(prefix="hfcord-history-") as tmp:
        return [await measure(n, Path(tmp)) for n in sizes]


def main() -> None:
    """Parse arguments, run, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10**3, 10**5, 10**6])
    args = parser.parse_args()
    rows = asyncio.run(run(args.sizes))
    header = [
        "messages",
        "context load p50 ms",
        "p99 ms",
        "record turn p50 ms",
        "p99 ms",
        "bytes/message",
        "fill s",
    ]
    print(table(f"History over {CHANNELS} channels", header, rows))


if __name__ == "__main__":
    main()
