"""HubSpot's API rate limits, counted per app per portal and per portal for search.

A ten-second rolling window and a daily cap apply per app per portal; the search endpoint has its
own per-second limit per portal.

Answers carry the ``X-HubSpot-RateLimit-*`` headers HubSpot documents; a refused call gets the
documented 429 body (``errorType: RATE_LIMIT`` with ``policyName`` naming the limit hit).
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sandbox.hubspot.errors import rate_limit_body

WINDOW_S = 10.0
"""HubSpot's burst window, in seconds."""


@dataclass
class Verdict:
    """The outcome of charging one request against the limits."""

    allowed: bool
    headers: dict[str, str]
    policy: str | None = None
    """``TEN_SECONDLY_ROLLING``, ``DAILY`` or ``SECONDLY`` when refused."""
    retry_after_s: float = 0.0

    def body(self, group_name: str) -> dict:
        """HubSpot's 429 body for a refusal."""
        return rate_limit_body(self.policy or "TEN_SECONDLY_ROLLING", group_name)


@dataclass
class RateLimiter:
    """Counts requests per ``(app_id, portal_id)`` and per portal for search."""

    ten_second_limit: int = 190
    daily_limit: int = 1_000_000
    search_per_second: int = 5
    _burst: dict[tuple[int, int], collections.deque] = field(default_factory=dict)
    _search: dict[int, collections.deque] = field(default_factory=dict)
    _daily: dict[tuple[int, int], tuple[str, int]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        """Forget every count (admin hook ``reset-rate-limits``)."""
        with self._lock:
            self._burst.clear()
            self._search.clear()
            self._daily.clear()

    def charge(self, app_id: int, portal_id: int, *, search: bool = False) -> Verdict:
        """Count one request and say whether it may proceed.

        Search requests count against the daily cap and their own per-second limit, not the
        ten-second window, and (as HubSpot's do) their answers carry no rate-limit headers.
        """
        now = time.monotonic()
        today = datetime.now(UTC).date().isoformat()
        key = (app_id, portal_id)
        with self._lock:
            day, used = self._daily.get(key, (today, 0))
            if day != today:
                day, used = today, 0
            if used >= self.daily_limit:
                return Verdict(
                    False, self._headers(key, now, used), "DAILY", _seconds_to_midnight()
                )
            if search:
                window = self._search.setdefault(portal_id, collections.deque())
                while window and now - window[0] >= 1.0:
                    window.popleft()
                if len(window) >= self.search_per_second:
                    return Verdict(False, {}, "SECONDLY", 1.0 - (now - window[0]))
                window.append(now)
                self._daily[key] = (day, used + 1)
                return Verdict(True, {})
            burst = self._burst.setdefault(key, collections.deque())
            while burst and now - burst[0] >= WINDOW_S:
                burst.popleft()
            if len(burst) >= self.ten_second_limit:
                headers = self._headers(key, now, used)
                return Verdict(False, headers, "TEN_SECONDLY_ROLLING", WINDOW_S - (now - burst[0]))
            burst.append(now)
            self._daily[key] = (day, used + 1)
            return Verdict(True, self._headers(key, now, used + 1))

    def _headers(self, key: tuple[int, int], now: float, used_today: int) -> dict[str, str]:
        burst = self._burst.get(key, collections.deque())
        in_window = sum(1 for t in burst if now - t < WINDOW_S)
        return {
            "X-HubSpot-RateLimit-Daily": str(self.daily_limit),
            "X-HubSpot-RateLimit-Daily-Remaining": str(max(0, self.daily_limit - used_today)),
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(WINDOW_S * 1000)),
            "X-HubSpot-RateLimit-Max": str(self.ten_second_limit),
            "X-HubSpot-RateLimit-Remaining": str(max(0, self.ten_second_limit - in_window)),
            "X-HubSpot-RateLimit-Secondly": str(max(1, self.ten_second_limit // 10)),
            "X-HubSpot-RateLimit-Secondly-Remaining": str(
                max(0, self.ten_second_limit // 10 - sum(1 for t in burst if now - t < 1.0))
            ),
        }


def _seconds_to_midnight() -> float:
    now = datetime.now(UTC)
    return 86_400 - (now.hour * 3600 + now.minute * 60 + now.second)
