"""The SQLite store: migrations, channel isolation, reset semantics, atomic turns."""

import asyncio
import sqlite3
from pathlib import Path

import aiosqlite
import pytest

from bot.migrations import MIGRATIONS, SCHEMA_VERSION, migrate, schema_version
from bot.store import NewMessage, Store


def turn(user: str, reply: str, author: int = 1) -> list[NewMessage]:
    return [
        NewMessage("user", user, author_id=author, author_name=f"user{author}"),
        NewMessage("assistant", reply, model="llama-3.2-3b"),
    ]


async def test_blank_database_gets_the_whole_schema(tmp_path: Path) -> None:
    async with aiosqlite.connect(tmp_path / "blank.db") as db:
        assert await schema_version(db) == 0
        assert await migrate(db) == SCHEMA_VERSION == len(MIGRATIONS)
        assert await schema_version(db) == SCHEMA_VERSION
        async with db.execute("PRAGMA table_info(messages)") as cursor:
            columns = {row[1] for row in await cursor.fetchall()}
        assert columns == {
            "id",
            "channel_id",
            "discord_message_id",
            "author_id",
            "author_name",
            "role",
            "content",
            "model",
            "created_at",
        }
        async with db.execute("PRAGMA table_info(channels)") as cursor:
            columns = {row[1] for row in await cursor.fetchall()}
        assert {"channel_id", "model", "context_reset_at", "reset_after_id"} <= columns
        async with db.execute("PRAGMA index_list(messages)") as cursor:
            indexes = {row[1] for row in await cursor.fetchall()}
        assert "messages_by_channel" in indexes


async def test_migrating_twice_is_a_no_op(tmp_path: Path) -> None:
    path = tmp_path / "again.db"
    store = await Store.open(path)
    await store.record_turn(5, *turn("hi", "hello"))
    await store.close()
    store = await Store.open(path)  # runs migrate() again on a current database
    assert [m.content for m in await store.history(5)] == ["hi", "hello"]
    await store.close()


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(RuntimeError, match="newer"):
        await Store.open(path)


async def test_wal_mode(store: Store, tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "test.sqlite3") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_channels_are_isolated(store: Store) -> None:
    await store.record_turn(1, *turn("one", "uno"))
    await store.record_turn(2, *turn("two", "dos"))
    await store.set_model(2, "unlearning-to-rest")
    assert [m.content for m in await store.context(1, 10)] == ["one", "uno"]
    assert [m.content for m in await store.context(2, 10)] == ["two", "dos"]
    assert (await store.channel(1)).model is None
    assert (await store.channel(2)).model == "unlearning-to-rest"
    assert await store.reset(1) == 2
    assert await store.context(1, 10) == []
    assert len(await store.context(2, 10)) == 2


async def test_context_is_newest_messages_in_order(store: Store) -> None:
    for i in range(5):
        await store.record_turn(9, *turn(f"q{i}", f"a{i}"))
    recent = await store.context(9, 4)
    assert [m.content for m in recent] == ["q3", "a3", "q4", "a4"]
    assert [m.role for m in recent] == ["user", "assistant", "user", "assistant"]
    assert recent[0].author_name == "user1" and recent[1].model == "llama-3.2-3b"


async def test_reset_sets_aside_and_deletes_nothing(store: Store) -> None:
    await store.record_turn(3, *turn("before", "old answer"))
    assert await store.reset(3) == 2
    state = await store.channel(3)
    assert state.context_reset_at is not None and state.reset_after_id > 0
    await store.record_turn(3, *turn("after", "new answer"))
    assert [m.content for m in await store.context(3, 10)] == ["after", "new answer"]
    assert [m.content for m in await store.history(3)] == [
        "before",
        "old answer",
        "after",
        "new answer",
    ]
    assert await store.reset(3) == 2  # only what came after the first reset
    assert await store.reset(3) == 0


async def test_reset_of_an_empty_channel_keeps_its_model(store: Store) -> None:
    await store.set_model(4, "unlearning-to-rest")
    assert await store.reset(4) == 0
    state = await store.channel(4)
    assert state.model == "unlearning-to-rest"
    assert state.context_reset_at is not None


async def test_a_turn_is_all_or_nothing(store: Store) -> None:
    bad = [NewMessage("user", "kept?"), NewMessage("robot", "not a role")]  # type: ignore[arg-type]
    with pytest.raises(sqlite3.IntegrityError):
        await store.record_turn(6, *bad)
    assert await store.history(6) == []
    await store.record_turn(6, *turn("fine", "ok"))
    assert len(await store.history(6)) == 2


async def test_everything_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "restart.db"
    store = await Store.open(path)
    await store.record_turn(7, *turn("remember me", "I will"))
    await store.set_model(7, "unlearning-to-rest")
    await store.reset(7)
    await store.record_turn(7, *turn("new start", "yes"))
    await store.set_meta("commands_hash", "abc")
    await store.close()

    store = await Store.open(path)
    assert [m.content for m in await store.context(7, 10)] == ["new start", "yes"]
    assert len(await store.history(7)) == 4
    assert (await store.channel(7)).model == "unlearning-to-rest"
    assert await store.get_meta("commands_hash") == "abc"
    assert await store.get_meta("missing") is None
    await store.close()


async def test_sql_injection_attempts_are_just_text(store: Store) -> None:
    evil = "x'); DROP TABLE messages; --"
    await store.record_turn(8, *turn(evil, evil))
    await store.set_model(8, evil)
    assert (await store.history(8))[0].content == evil
    assert (await store.channel(8)).model == evil


async def test_channel_settings_are_cached_and_written_through(store: Store) -> None:
    await store.set_model(11, "unlearning-to-rest")
    assert (await store.channel(11)).model == "unlearning-to-rest"
    await store.record_turn(11, *turn("a", "b"))
    await store.reset(11)
    state = await store.channel(11)
    assert state.model == "unlearning-to-rest" and state.reset_after_id > 0
    await store.set_model(11, "llama-3.2-3b")
    assert (await store.channel(11)).reset_after_id == state.reset_after_id  # kept
    assert await store.context(11, 10) == []


async def test_concurrent_turns_are_written_together_and_isolated(store: Store) -> None:
    # Many turns at once share a transaction; one bad turn does not sink the others.
    good = [store.record_turn(c, *turn(f"q{c}", f"a{c}")) for c in range(100, 150)]
    bad = store.record_turn(
        999,
        NewMessage("user", "x"),
        NewMessage("robot", "y"),  # type: ignore[arg-type]
    )
    results = await asyncio.gather(*good, bad, return_exceptions=True)
    assert results[:50] == [None] * 50
    assert isinstance(results[50], sqlite3.IntegrityError)
    for c in range(100, 150):
        assert [m.content for m in await store.history(c)] == [f"q{c}", f"a{c}"]
    assert await store.history(999) == []


async def test_queued_turns_are_written_before_close(tmp_path: Path) -> None:
    path = tmp_path / "close.db"
    store = await Store.open(path)
    pending = [asyncio.ensure_future(store.record_turn(c, *turn("q", "a"))) for c in range(20)]
    await asyncio.sleep(0)  # queued, not yet written
    await store.close()
    await asyncio.gather(*pending)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 40
