"""Shared fixtures, and a compatibility shim for aioresponses on aiohttp 3.14."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from types import SimpleNamespace
from typing import Any

import aiohttp
import aioresponses.core
import pytest
from aiohttp import ClientResponse

from bot.config import Settings
from bot.inference import InferenceClient
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


@pytest.fixture
def client(session: aiohttp.ClientSession) -> InferenceClient:
    """An inference client with the test token and a short timeout."""
    return InferenceClient(session, TEST_TOKEN, timeout=2.0)


@pytest.fixture
def mocked() -> Iterator[aioresponses.aioresponses]:
    """aioresponses that lets requests to 127.0.0.1 test servers through."""
    with aioresponses.aioresponses(passthrough=["http://127.0.0.1"]) as m:
        yield m
