"""`python -m bot [run|check|sync]`: compose the services and own their lifetimes."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import aiohttp
import discord
from dotenv import load_dotenv

from bot import __version__
from bot.client import HFCord
from bot.config import ConfigError, Settings
from bot.inference import InferenceClient, RetryPolicy, probe
from bot.store import Store

log = logging.getLogger("bot")

USER_AGENT = f"hfcord/{__version__} (+https://github.com/hfcord/hfcord)"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line: run (default), check or sync."""
    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__)
    parser.add_argument(
        "command",
        nargs="?",
        default="run",
        choices=("run", "check", "sync"),
        help="run the bot (default); check each model's endpoint; or run with a forced "
        "slash-command sync",
    )
    parser.add_argument("--env-file", default=".env", help="dotenv file to read (default .env)")
    return parser.parse_args(argv)


def load_settings(env_file: str, *, require_discord: bool) -> Settings:
    """Read .env (the real environment wins) and validate everything at once."""
    load_dotenv(env_file, override=False)
    return Settings.from_env(os.environ, require_discord=require_discord)


def http_session(settings: Settings) -> aiohttp.ClientSession:
    """The one HTTP session for model calls."""
    return aiohttp.ClientSession(
        headers={"User-Agent": USER_AGENT},
        # TGI's last stream event holds the whole answer on one line; 64 KiB is too tight.
        read_bufsize=2**20,
    )


def inference_client(
    settings: Settings,
    session: aiohttp.ClientSession,
    *,
    retry: bool = True,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> InferenceClient:
    """The model client as configured; without retry, one attempt per call (for `check`)."""
    policy = RetryPolicy(deadline=settings.retry_deadline, max_attempts=20 if retry else 1)
    return InferenceClient(
        session,
        settings.hf_token,
        timeout=settings.request_timeout,
        retry=policy,
        max_concurrency=settings.max_concurrency,
        sleep=sleep,
    )


@contextlib.asynccontextmanager
async def services(
    settings: Settings,
    *,
    force_sync: bool = False,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    **bot_options: Any,
) -> AsyncIterator[HFCord]:
    """Open the HTTP session, the store and the bot, in order; close them in reverse.

    `sleep` paces retries (tests pass one that does not wait); bot_options go to discord.py.
    """
    async with http_session(settings) as session, await Store.open(settings.database_path) as store:
        inference = inference_client(settings, session, sleep=sleep)
        async with HFCord(settings, store, inference, force_sync=force_sync, **bot_options) as bot:
            yield bot


async def run(settings: Settings, *, force_sync: bool) -> None:
    """Run the bot until Discord closes the connection or a signal stops it."""
    assert settings.discord_token is not None
    async with services(settings, force_sync=force_sync) as bot:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        runner = asyncio.create_task(bot.start(settings.discord_token))
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if stopper in done:
            log.info("Shutting down")
            await bot.close()
        stopper.cancel()
        await runner


async def check(settings: Settings) -> bool:
    """Call each model's endpoint once and report; True when all answered."""
    async with http_session(settings) as session:
        client = inference_client(settings, session, retry=False)
        results = await asyncio.gather(*(probe(client, s) for s in settings.models.values()))
    for result in results:
        spec = result.model
        print(
            f"{'OK ' if result.ok else 'ERR'} {spec.name} ({spec.hub_id} via {spec.endpoint_host}, "
            f"{spec.api} API): {result.status}: {result.hint} [{result.latency:.1f} s]"
        )
    return all(r.ok for r in results)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = parse_args(argv)
    try:
        settings = load_settings(args.env_file, require_discord=args.command != "check")
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    discord.utils.setup_logging(level=getattr(logging, settings.log_level), root=True)
    for line in settings.describe():
        log.info("%s", line)
    if args.command == "check":
        return 0 if asyncio.run(check(settings)) else 1
    try:
        asyncio.run(run(settings, force_sync=args.command == "sync"))
    except discord.LoginFailure:
        log.error("Discord rejected DISCORD_TOKEN: reset it in the Developer Portal")
        return 1
    except discord.PrivilegedIntentsRequired:
        log.error("Discord refused the gateway intents; see the README's intents section")
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
