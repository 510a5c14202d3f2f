"""The sandbox clock and the timeline of provider progress that it drives.

Progress (order processing, port steps, scheduled activations and cancellations, expiries) is a
heap of due actions. Advancing the clock runs every action that became due, in time order, each
seeing its own due time; a background ticker does the same in real time at `speed`. No polling: the
ticker sleeps until the next due action or until woken.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

Action = Callable[[datetime], None]


class SandboxClock:
    """now = start + manual offset + speed × real time elapsed."""

    def __init__(self, *, start: datetime, speed: float) -> None:
        self._base = start
        self._mono = time.monotonic()
        self.speed = speed

    def now(self) -> datetime:
        return self._base + timedelta(seconds=(time.monotonic() - self._mono) * self.speed)

    def _rebase(self) -> None:
        self._base = self.now()
        self._mono = time.monotonic()

    def advance(self, seconds: float) -> datetime:
        self._rebase()
        self._base += timedelta(seconds=max(0.0, seconds))
        return self._base

    def set_speed(self, speed: float) -> None:
        self._rebase()
        self.speed = speed


class Timeline:
    """Due actions, run in (time, insertion) order."""

    def __init__(self, clock: SandboxClock) -> None:
        self._clock = clock
        self._heap: list[tuple[datetime, int, Action]] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()

    def at(self, when: datetime, action: Action) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), action))
        self._wake.set()

    def after(self, seconds: float, action: Action, *, base: datetime | None = None) -> None:
        self.at((base or self._clock.now()) + timedelta(seconds=seconds), action)

    def run_due(self) -> int:
        """Run everything due now, including actions scheduled by actions that are also due."""
        ran = 0
        now = self._clock.now()
        while self._heap and self._heap[0][0] <= now:
            when, _, action = heapq.heappop(self._heap)
            action(when)
            ran += 1
        return ran

    def reset(self, clock: SandboxClock) -> None:
        """Forget every due action and follow `clock` (the ticker task keeps this object)."""
        self._clock = clock
        self._heap.clear()
        self._wake.set()

    def poke(self) -> None:
        self._wake.set()

    async def run_forever(self) -> None:
        """The background ticker."""
        while True:
            self.run_due()
            timeout: float | None = None
            if self._heap and self._clock.speed > 0:
                gap = (self._heap[0][0] - self._clock.now()).total_seconds() / self._clock.speed
                timeout = max(gap, 0.001)
            self._wake.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                pass


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds and a Z, the form every sandbox timestamp uses."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
