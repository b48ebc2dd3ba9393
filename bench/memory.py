"""Memory per channel: the bot's resident memory with 10, 1000 and 10,000 active channels.

Run: `make bench-memory` (or `python -m bench.memory`).

Channels live in servers of 500 (Discord's limit per server). A channel is active once
someone has talked with the bot there; each gets one exchange, then the bot's RSS is read.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import time

from bench.common import harness, memory_mib, table
from tests.fakediscord import Channel, Message

PER_GUILD = 500
CONCURRENCY = 50  # conversations in flight at once while channels are activated


async def run(steps: list[int]) -> list[list[object]]:
    """Activate channels up to each step and read the bot's memory after each."""
    rows: list[list[object]] = []
    async with harness() as h:
        user = h.emu.add_user("bencher")
        channels: list[Channel] = []
        for g in range(-(-max(steps) // PER_GUILD)):
            guild = h.emu.add_guild(f"server-{g}")
            h.emu.add_member(guild, user)
            count = min(PER_GUILD, max(steps) - len(channels))
            channels += [h.emu.add_text_channel(guild, f"c{i}") for i in range(count)]
        await h.start_bot(STREAMING="false", CHANNEL_QUEUE_LIMIT="100")
        baseline = memory_mib(h.pid)
        rows.append([0, baseline, 0.0, "-"])
        replies: dict[int, asyncio.Future[Message]] = {}

        def on_message(message: Message) -> None:
            waiter = replies.get(message.channel.id)
            if message.author.id == h.emu.bot_user.id and waiter and not waiter.done():
                waiter.set_result(message)

        h.emu.message_listeners.append(on_message)
        gate = asyncio.Semaphore(CONCURRENCY)

        async def activate(channel: Channel) -> None:
            async with gate:
                reply = replies[channel.id] = asyncio.get_running_loop().create_future()
                await h.emu.user_message(channel, user, "hello there", mention_bot=True)
                await asyncio.wait_for(reply, 60)
                del replies[channel.id]

        active = 0
        for step in steps:
            started = time.monotonic()
            await asyncio.gather(*(activate(c) for c in channels[active:step]))
            active = step
            rss = memory_mib(h.pid)
            per_channel = (rss - baseline) / step * 1024
            rows.append([step, rss, per_channel, f"{time.monotonic() - started:.1f} s"])
            if os.environ.get("HFCORD_TRACEMALLOC"):
                os.kill(h.pid, signal.SIGUSR1)  # ask the bot for its allocation report
    return rows


def main() -> None:
    """Parse arguments, run, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 1000, 10_000])
    args = parser.parse_args()
    rows = asyncio.run(run(args.steps))
    header = ["active channels", "bot RSS MiB", "KiB per channel", "time to activate"]
    print(table("Bot memory by active channels", header, rows))


if __name__ == "__main__":
    main()
