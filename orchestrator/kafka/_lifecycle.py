"""The lifecycle every resource owner here shares: NEW → RUNNING → STOPPING → STOPPED."""

from __future__ import annotations

import enum


class State(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"
