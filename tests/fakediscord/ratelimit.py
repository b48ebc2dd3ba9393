"""Fixed-window rate limit buckets that answer with Discord's headers."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass


@dataclass
class Limit:
    """`limit` requests per `window` seconds; `advertise` makes the headers lie (forces 429s)."""

    limit: int
    window: float
    advertise: int | None = None


@dataclass(frozen=True)
class RateLimitHit:
    """One 429 the emulator answered."""

    bucket: str
    major: str
    route: str
    retry_after: float


DEFAULT_LIMITS = {
    "message_create": Limit(5, 5.0),
    "message_edit": Limit(5, 5.0),
    # Interaction webhooks (followups, edits of the original): 5 per 2 s per token, as
    # commonly observed; adjust if Discord's headers say otherwise.
    "webhook": Limit(5, 2.0),
    "default": Limit(50, 1.0),
}


@dataclass
class _Window:
    reset_at: float
    used: int = 0


class RateLimiter:
    """Counts requests per (bucket, major parameter) and builds X-RateLimit-* headers."""

    def __init__(self, limits: dict[str, Limit]) -> None:
        self.limits = limits
        self.hits: list[RateLimitHit] = []
        self._windows: dict[tuple[str, str], _Window] = {}

    def take(self, bucket: str, major: str, route: str) -> tuple[dict[str, str], float | None]:
        """Consume one request; return the headers and, when over the limit, retry_after."""
        rule = self.limits[bucket]
        now = time.monotonic()
        window = self._windows.get((bucket, major))
        if window is None or now >= window.reset_at:
            # Like Discord, a window starts with the first request after the previous expired.
            window = self._windows[(bucket, major)] = _Window(now + rule.window)
        # Round up so a client sleeping for exactly Reset-After never arrives early.
        reset_after = math.ceil((window.reset_at - now) * 1000) / 1000
        allowed = window.used < rule.limit
        window.used += allowed
        shown = rule.advertise or rule.limit
        headers = {
            "X-RateLimit-Limit": str(shown),
            "X-RateLimit-Remaining": str(max(0, shown - window.used)),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": f"emu-{bucket}",
        }
        if allowed:
            return headers, None
        self.hits.append(RateLimitHit(bucket, major, route, reset_after))
        headers["Retry-After"] = str(math.ceil(reset_after))
        headers["X-RateLimit-Scope"] = "user"
        return headers, reset_after
