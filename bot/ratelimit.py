"""Per-user message rate limits, over aiolimiter's leaky buckets."""

from __future__ import annotations

import logging
import time

from aiolimiter import AsyncLimiter

log = logging.getLogger(__name__)

# Buckets kept before idle (fully drained) ones are dropped, so memory stays bounded.
MAX_TRACKED = 10_000
WINDOW = 60.0

Key = tuple[int, int]


class UserRateLimiter:
    """At most `per_minute` messages per user (per server, optionally) reach a model."""

    def __init__(self, per_minute: int, *, per_server: bool = False) -> None:
        self.per_minute = per_minute
        self.per_server = per_server
        self._buckets: dict[Key, AsyncLimiter] = {}
        self._warned: dict[Key, float] = {}

    @property
    def enabled(self) -> bool:
        """Whether any limit applies (0 per minute turns it off)."""
        return self.per_minute > 0

    def key(self, user_id: int, guild_id: int | None) -> Key:
        """Whose bucket a message counts against."""
        return (user_id, (guild_id or 0) if self.per_server else 0)

    async def allow(self, user_id: int, guild_id: int | None) -> bool:
        """Count one message; False when the user is over the limit (nothing is counted)."""
        if not self.enabled:
            return True
        key = self.key(user_id, guild_id)
        bucket = self._buckets.get(key)
        if bucket is None:
            self._prune()
            bucket = self._buckets[key] = AsyncLimiter(self.per_minute, WINDOW)
        if not bucket.has_capacity():
            return False
        await bucket.acquire()  # returns at once: capacity was just checked
        return True

    def should_warn(self, user_id: int, guild_id: int | None) -> bool:
        """Whether to tell this user about the limit (at most once per window)."""
        key = self.key(user_id, guild_id)
        now = time.monotonic()
        if now - self._warned.get(key, -WINDOW) < WINDOW:
            return False
        self._warned[key] = now
        return True

    @property
    def tracked(self) -> int:
        """How many buckets are held in memory."""
        return len(self._buckets)

    def _prune(self) -> None:
        if len(self._buckets) < MAX_TRACKED:
            return
        idle = [k for k, b in self._buckets.items() if b.has_capacity(self.per_minute)]
        for key in idle:
            del self._buckets[key]
            self._warned.pop(key, None)
        log.debug("Dropped %d idle rate-limit buckets", len(idle))
