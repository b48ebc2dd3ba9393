"""Shared harness: loopback Discord and Hugging Face stand-ins, a bot process, /proc figures.

The bot runs as its own process (`python -m tests.loopback_bot`, the production entry
point pointed at 127.0.0.1) so that its CPU time and memory are measured apart from the
stand-ins, which run in the benchmark's process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from tests import fakehf
from tests.fakediscord import DiscordEmulator, Limit

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "hf_bench_token_not_a_secret_000000000000"
# Discord's buckets would cap a bot at 5 messages per 5 s per channel: lift them so the
# figures show the bot's own capacity, not Discord's limits.
NO_LIMITS = {name: Limit(10**9, 1.0) for name in ("message_create", "message_edit", "default")}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def percentile(values: Sequence[float], pct: float) -> float:
    """The pct-th percentile (nearest rank) of values."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def summary(values: Sequence[float]) -> tuple[float, float, float]:
    """p50, p95 and p99 of values."""
    return percentile(values, 50), percentile(values, 95), percentile(values, 99)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_mib(pid: int, key: str = "VmRSS") -> float:
    """A process's resident memory now (VmRSS) or at its peak (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table, columns aligned."""
    cells = [list(map(str, header))] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(cells[0], widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells[1:]]
    return "\n".join(lines)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


@dataclass
class Harness:
    """The stand-ins, and the bot process once started."""

    emu: DiscordEmulator
    hf: fakehf.FakeHF
    workdir: Path
    process: asyncio.subprocess.Process | None = None
    profiler: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start_bot(self, **env: str) -> None:
        """Start the bot process and wait until it is connected and ready."""
        full_env = {
            "PATH": os.environ["PATH"],
            "PYTHONPATH": str(ROOT),
            "FAKE_DISCORD_PORT": str(self.emu.port),
            "DISCORD_TOKEN": self.emu.bot_user.token or "",
            "HUGGINGFACE_API_TOKEN": TOKEN,
            "HUGGINGFACE_ENDPOINT": self.hf.url,
            "DATABASE_PATH": str(self.workdir / "bench.sqlite3"),
            "LOG_LEVEL": "ERROR",
            "USER_RATE_LIMIT": "0",
            # HFCORD_TRACEMALLOC=file: the bot writes its biggest allocations there on SIGUSR1.
            **{k: v for k, v in os.environ.items() if k == "HFCORD_TRACEMALLOC"},
            **env,
        }
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.loopback_bot",
            "--env-file",
            str(self.workdir / "none.env"),
            env=full_env,
            cwd=self.workdir,
        )
        await self.emu.wait_until_ready(timeout=60)
        # HFCORD_PROFILE=file records the bot with py-spy (collapsed stacks), for profiling.
        profile = os.environ.get("HFCORD_PROFILE")
        if profile:
            self.profiler = await asyncio.create_subprocess_exec(
                "py-spy", "record", "--nonblocking", "-r", "200", "-f", "raw",
                "-o", f"{profile}.{self.process.pid}", "--pid", str(self.process.pid),
            )  # fmt: skip

    async def stop_bot(self) -> None:
        """Stop the bot process (SIGTERM) and wait for it."""
        if self.profiler is not None and self.profiler.returncode is None:
            self.profiler.send_signal(signal.SIGINT)
            await asyncio.wait_for(self.profiler.wait(), 30)
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            await asyncio.wait_for(self.process.wait(), 30)


@asynccontextmanager
async def harness(*, latency: float = 0.0) -> AsyncIterator[Harness]:
    """Stand-ins on 127.0.0.1 without rate limits, and a temporary working directory."""
    with tempfile.TemporaryDirectory(prefix="hfcord-bench-") as tmp:
        async with (
            DiscordEmulator(rate_limits=NO_LIMITS) as emu,
            fakehf.FakeHF(token=TOKEN, latency=latency) as hf,
        ):
            emu.patch_discord()
            h = Harness(emu, hf, Path(tmp))
            try:
                yield h
            finally:
                await h.stop_bot()
