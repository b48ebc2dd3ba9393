"""`python -m tests.loopback_bot`: the production entry point, pointed at a loopback Discord.

Only the Discord base URLs (from FAKE_DISCORD_PORT) and the guild-ready wait differ from
`python -m bot`; tests use it to signal and kill a real bot process.
"""

import functools
import os
import signal
import sys
import tracemalloc

import discord
import yarl

import bot.__main__ as entry


def trace_memory(path: str) -> None:
    """Record allocations; on SIGUSR1 write the biggest holders to path (for profiling)."""
    tracemalloc.start(2)

    def dump(signum: int, frame: object) -> None:
        stats = tracemalloc.take_snapshot().statistics("traceback")
        with open(path, "w", encoding="utf-8") as out:
            out.write(f"total {sum(s.size for s in stats) / 2**20:.1f} MiB\n")
            for stat in stats[:25]:
                out.write(f"{stat.size / 1024:.0f} KiB in {stat.count}\n")
                out.write("\n".join(stat.traceback.format()) + "\n")

    signal.signal(signal.SIGUSR1, dump)


def main() -> int:
    """Patch the Discord hosts, then run bot.__main__.main with the same arguments."""
    if os.environ.get("HFCORD_TRACEMALLOC"):
        trace_memory(os.environ["HFCORD_TRACEMALLOC"])
    port = int(os.environ["FAKE_DISCORD_PORT"])
    discord.http.Route.BASE = f"http://127.0.0.1:{port}/api/v10"
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(f"ws://127.0.0.1:{port}/")
    entry.services = functools.partial(entry.services, guild_ready_timeout=0.05)  # type: ignore[assignment]
    return entry.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
