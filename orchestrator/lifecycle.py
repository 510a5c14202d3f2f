"""`async with` for everything that is started and stopped: one mixin instead of the same two
methods in every resource owner (clients, consumers, the relay, local brokers, the worker).

A class supplies `start()` and `stop()` with its own rules (a second start raising, a stop that
is safe to repeat); the mixin only maps `async with x:` onto them.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self


class RunState(enum.Enum):
    """Where a started-once resource stands (for those whose stop has no in-between state)."""

    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


class AsyncLifecycle(ABC):
    """`async with x:` awaits `x.start()` on the way in and `x.stop()` on the way out."""

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
