"""The aioresponses compatibility shim keeps mocked responses readable."""

import aiohttp
import pytest
from aioresponses import aioresponses


async def test_mocked_json_response_is_readable() -> None:
    with aioresponses() as mocked:
        mocked.post("https://example.invalid/x", payload={"ok": True}, status=201)
        async with (
            aiohttp.ClientSession() as session,
            session.post("https://example.invalid/x") as response,
        ):
            assert response.status == 201
            assert await response.json() == {"ok": True}


async def test_mocked_exception_is_raised() -> None:
    with aioresponses() as mocked:
        mocked.get("https://example.invalid/y", exception=aiohttp.ClientConnectionError("no"))
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientConnectionError):
                await session.get("https://example.invalid/y")
