"""`python -m tests.loopback_bot`: the production entry point, pointed at a loopback Discord.

Only the Discord base URLs (from FAKE_DISCORD_PORT) and the guild-ready wait differ from
`python -m bot`; tests use it to signal and kill a real bot process.
"""

import functools
import os
import sys

import discord
import yarl

import bot.__main__ as entry


def main() -> int:
    """Patch the Discord hosts, then run bot.__main__.main with the same arguments."""
    port = int(os.environ["FAKE_DISCORD_PORT"])
    discord.http.Route.BASE = f"http://127.0.0.1:{port}/api/v10"
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(f"ws://127.0.0.1:{port}/")
    entry.services = functools.partial(entry.services, guild_ready_timeout=0.05)  # type: ignore[assignment]
    return entry.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
