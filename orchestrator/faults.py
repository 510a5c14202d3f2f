"""Named crash points: the reliability suite kills a worker at an exact step of the protocol.

`ORCHESTRATOR_FAULT_POINT=provider.after_call:3` (parsed once by `Settings.fault_point`, armed by
`orchestrator run`) makes the process SIGKILL itself the 3rd time it reaches
`reach("provider.after_call")`. Several points may be armed at once: `a:1,b:2`. SIGKILL, not an
exception: no `finally`, no rollback handler, no flush runs, exactly as when the kernel's OOM
killer or a power cut ends a process.

Off (the default and production), `reach` is one dict truth test: nothing is armed, so it returns.
The registry is module-level on purpose: it describes the process, and only `orchestrator run` (a
process of its own) arms it; in-process tests never do.

Before dying, the process writes `FAULT_POINT_FIRED <point>` to stderr (unbuffered), so a test can
tell which point killed it.
"""

from __future__ import annotations

import os
import signal

FAULT_POINTS: tuple[str, ...] = (
    "intake.before_commit",  # CRM event applied, its transaction not yet committed
    "intake.after_commit",  # committed, the Kafka offset not yet
    "consumer.before_offset_commit",
    "consumer.after_offset_commit",
    "step.before_intent_commit",  # step transaction 1: intent stored, not committed
    "step.after_intent_commit",  # intent durable, provider not yet called
    "provider.before_call",  # about to send a keyed (mutating) request
    "provider.after_call",  # the provider answered; the answer is not recorded anywhere yet
    "step.before_outcome_commit",  # step transaction 2: outcome + transition, not committed
    "step.after_outcome_commit",
    "relay.before_publish",  # outbox rows read, nothing sent
    "relay.after_publish",  # the broker acknowledged, rows not yet marked published
)
"""Every point the engine calls `reach` with, in the order a line item meets them."""

MARKER = "FAULT_POINT_FIRED"

_armed: dict[str, int] = {}


class FaultSpecError(ValueError):
    """`ORCHESTRATOR_FAULT_POINT` does not name known points with positive counts."""


def parse_spec(spec: str) -> dict[str, int]:
    """`"point:n[,point:n]"` (`:n` defaults to 1) → {point: n}; unknown points are refused."""
    armed: dict[str, int] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        point, _, count = part.partition(":")
        if point not in FAULT_POINTS:
            raise FaultSpecError(f"unknown fault point {point!r}; known: {', '.join(FAULT_POINTS)}")
        if count and not (count.isdigit() and int(count) >= 1):
            raise FaultSpecError(f"fault point {point!r}: count must be a positive integer, got {count!r}")
        armed[point] = int(count or 1)
    return armed


def arm(spec: str | None) -> None:
    """Replace what is armed (None or "" disarms everything)."""
    _armed.clear()
    if spec:
        _armed.update(parse_spec(spec))


def reach(point: str) -> None:
    """Called at each named point; kills this process when its armed count runs out."""
    if not _armed:
        return
    remaining = _armed.get(point)
    if remaining is None:
        return
    if remaining > 1:
        _armed[point] = remaining - 1
        return
    os.write(2, f"\n{MARKER} {point}\n".encode())
    os.kill(os.getpid(), signal.SIGKILL)
