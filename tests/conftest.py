"""Shared fixtures, and a compatibility shim for aioresponses on aiohttp 3.14."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from types import SimpleNamespace
from typing import Any

import aiohttp
import aioresponses.core
import pytest
from aiohttp import ClientResponse

from bot.config import Settings
from bot.inference import InferenceClient, RetryPolicy
from bot.store import Store


class _CompatResponse(ClientResponse):
    """aioresponses 0.7.9 builds ClientResponse without aiohttp 3.14's `stream_writer`.

    aioresponses issue 289: remove this shim once a release passes `stream_writer` itself.
    With `writer=None` (the request is already sent) aiohttp only reads `output_size` from it.
    """

    def __init__(self, method: str, url: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


aioresponses.core.ClientResponse = _CompatResponse  # type: ignore[misc]

# The end-to-end fixtures (world, bot) live in tests/e2e.py.
pytest_plugins = ["tests.e2e"]

TEST_TOKEN = "hf_test_token_that_must_never_leak_0123456789"


def make_settings(**env: str) -> Settings:
    """Settings from a minimal test environment plus overrides."""
    base = {
        "DISCORD_TOKEN": "discord-test-token",
        "HUGGINGFACE_API_TOKEN": TEST_TOKEN,
        "HUGGINGFACE_ENDPOINT": "http://127.0.0.1:9/standard",
    }
    base.update(env)
    return Settings.from_env(base)


@pytest.fixture
async def store(tmp_path: Any) -> AsyncIterator[Store]:
    """A fresh store in a temporary database file."""
    store = await Store.open(tmp_path / "test.sqlite3")
    yield store
    await store.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """One aiohttp session, like the bot's."""
    async with aiohttp.ClientSession() as session:
        yield session


class Sleeps:
    """An injectable asyncio.sleep that records the delays and does not wait."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(0)


@pytest.fixture
def sleeps() -> Sleeps:
    """Back-off delays, recorded instead of slept."""
    return Sleeps()


@pytest.fixture
def client(session: aiohttp.ClientSession, sleeps: Sleeps) -> InferenceClient:
    """An inference client with the test token, a short timeout and no real back-off."""
    return InferenceClient(
        session, TEST_TOKEN, timeout=2.0, retry=RetryPolicy(deadline=10.0), sleep=sleeps
    )


@pytest.fixture
def mocked() -> Iterator[aioresponses.aioresponses]:
    """aioresponses that lets requests to 127.0.0.1 test servers through."""
    with aioresponses.aioresponses(passthrough=["http://127.0.0.1"]) as m:
        yield m
