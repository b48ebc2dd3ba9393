"""Bot overhead per message, through the loopback Discord and Hugging Face stand-ins.

Run: `make bench-overhead` (or `python -m bench.overhead --channels 50 --messages 20`).

N channels talk at once, each sending its next message as soon as the previous reply
arrives. For each message: overhead = (reply POST seen by Discord - MESSAGE_CREATE sent)
- (model answer produced - model request received), i.e. everything the bot itself
adds: gateway parsing, history load, HTTP calls, typing, posting and recording.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any

from bench.common import (
    Harness,
    cpu_seconds,
    harness,
    memory_mib,
    percentile,
    summary,
    table,
)
from tests.fakediscord import Channel, Message, User


@dataclass
class Result:
    """One run's figures."""

    label: str
    harness_busy: float  # % of one core the stand-ins used: near 100 they limit the figures
    replies: int
    seconds: float
    overhead_ms: tuple[float, float, float]
    legs_ms: tuple[float, float]
    cpu_ms_per_message: float
    peak_rss_mib: float

    def row(self) -> list[object]:
        p50, p95, p99 = self.overhead_ms
        return [
            self.label,
            self.replies,
            self.replies / self.seconds,
            p50,
            p95,
            p99,
            *self.legs_ms,
            self.cpu_ms_per_message,
            self.peak_rss_mib,
            self.harness_busy,
        ]


HEADER = [
    "run",
    "replies",
    "replies/s",
    "overhead p50 ms",
    "p95 ms",
    "p99 ms",
    "to model p50",
    "to post p50",
    "CPU ms/msg",
    "peak RSS MiB",
    "stand-ins CPU %",
]


async def converse(
    h: Harness, channels: list[Channel], user: User, messages: int, tag: str
) -> dict[str, tuple[float, float]]:
    stagger = h.hf.latency
    """Every channel sends `messages` messages, one after each reply; key -> (sent, replied)."""
    timings: dict[str, tuple[float, float]] = {}
    replies: dict[int, asyncio.Queue[Message]] = {c.id: asyncio.Queue() for c in channels}

    def on_message(message: Message) -> None:
        if message.author.id == h.emu.bot_user.id and message.channel.id in replies:
            replies[message.channel.id].put_nowait(message)

    async def one_channel(channel: Channel) -> None:
        # Channels start spread over one model latency, as independent people would: in
        # step, they would arrive in bursts of N and measure the burst, not the bot.
        await asyncio.sleep(random.uniform(0, stagger))
        for i in range(messages):
            key = f"{tag}-{channel.id}-{i}"
            sent = await h.emu.user_message(channel, user, key, mention_bot=True)
            reply = await asyncio.wait_for(replies[channel.id].get(), 120)
            timings[key] = (sent.created_at, reply.created_at)

    h.emu.message_listeners.append(on_message)
    try:
        await asyncio.gather(*(one_channel(c) for c in channels))
    finally:
        h.emu.message_listeners.remove(on_message)
    return timings


async def measure(
    h: Harness, channels: list[Channel], user: User, messages: int, label: str
) -> Result:
    """One measured run on a warmed-up bot."""
    answered: dict[str, float] = {}

    def responder(body: dict[str, Any]) -> str:
        key = body["messages"][-1]["content"]
        answered[key] = time.monotonic()
        return "Here is a short answer to " + key

    h.hf.responder = responder
    # Warm up: a first message per channel fills caches and opens connections.
    await converse(h, channels, user, 1, f"warm-{label}")
    cpu_before, harness_before = cpu_seconds(h.pid), time.process_time()
    started = time.monotonic()
    timings = await converse(h, channels, user, messages, label)
    seconds = time.monotonic() - started
    cpu = cpu_seconds(h.pid) - cpu_before
    harness_cpu = time.process_time() - harness_before
    received = {r.json["messages"][-1]["content"]: r.time for r in h.hf.requests if r.json}
    overheads = [
        ((replied - sent) - (answered[key] - received[key])) * 1000
        for key, (sent, replied) in timings.items()
    ]
    # The two legs: message event to model request, and model answer to reply post.
    before = [(received[k] - sent) * 1000 for k, (sent, _) in timings.items()]
    after = [(replied - answered[k]) * 1000 for k, (_, replied) in timings.items()]
    return Result(
        label,
        harness_cpu / seconds * 100,
        len(timings),
        seconds,
        summary(overheads),
        (percentile(before, 50), percentile(after, 50)),
        cpu / len(timings) * 1000,
        memory_mib(h.pid, "VmHWM"),
    )


async def run(channel_count: int, messages: int) -> list[Result]:
    """Instant, 200 ms and 1 s models, non-streamed and streamed.

    With a 1 s model, 50 channels send about 50 messages a second: the most Discord lets a
    bot post (50 requests per second), so that run shows the overhead at real-world peak.
    """
    results = []
    for streaming in ("false", "true"):
        async with harness() as h:
            guild = h.emu.add_guild("bench")
            user = h.emu.add_user("bencher")
            h.emu.add_member(guild, user)
            channels = [h.emu.add_text_channel(guild, f"c{i}") for i in range(channel_count)]
            await h.start_bot(
                STREAMING=streaming, CHANNEL_QUEUE_LIMIT="100", HF_MAX_CONCURRENCY="100"
            )
            mode = "streamed" if streaming == "true" else "whole"
            size = f"{channel_count}x{messages}"
            for latency, name in ((0.0, "instant"), (0.2, "200 ms"), (1.0, "1 s")):
                h.hf.latency = latency
                label = f"{name} {mode} {size}"
                results.append(await measure(h, channels, user, messages, label))
    return results


def main() -> None:
    """Parse arguments, run, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=50)
    parser.add_argument("--messages", type=int, default=20)
    args = parser.parse_args()
    results = asyncio.run(run(args.channels, args.messages))
    print(table("Bot overhead per message", HEADER, [r.row() for r in results]))


if __name__ == "__main__":
    main()
