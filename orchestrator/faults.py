"""Named crash points: the reliability suite kills a process at an exact step of the protocol, for
an exact kind of work.

Every call site says where it is and what it is doing: `reach("step.before_intent_commit",
"submit_order")`. `ORCHESTRATOR_FAULT_POINT` (parsed once by `Settings.fault_point`, armed by
`orchestrator run` and by the operator commands) arms points:

- `step.before_intent_commit@submit_order:1`: the 1st time that point is reached for that kind;
- `provider.after_call:3`: the 3rd time that point is reached, whatever the kind;
- several at once, comma separated: `a@k:1,b:2` (`:n` defaults to 1).

The process then SIGKILLs itself: no `finally`, no rollback handler, no flush runs, exactly as when
the kernel's OOM killer or a power cut ends a process. Before dying it writes
`FAULT_POINT_FIRED <point> <kind>` to stderr (unbuffered), so a test can tell where it died.

Off (the default and production), `reach` is one dict truth test: nothing is armed, so it returns.
The registry is module-level on purpose: it describes the process, and only a process of its own
(`orchestrator run`, an operator command) arms it; in-process tests never do.
"""

from __future__ import annotations

import os
import re
import signal

STEP_KINDS: tuple[str, ...] = (
    # the order's own calls (engine/_plan.py `OrderCall`)
    "create_order",
    "remove_failed_item",  # an item that failed in the cart leaves it before its siblings are submitted
    "submit_order",
    "cancel_order",
    # a line item's calls (engine/_plan.py `Call`)
    "add_item",
    "update_item",  # an amendment of an item already in the provider's cart
    "update_porting",  # corrected porting details during the port
    "retry_port",  # corrected details (or an operator's replay) request a rejected port again
    "remove_item",  # compensation: out of the cart
    "cancel_subscription",  # compensation: the subscription exists
)
"""Every provider call the engine makes under an idempotency key (reads pass no crash point)."""

INTAKE_KINDS: tuple[str, ...] = (
    "crm.order.submitted",
    "crm.order.line_item.updated",
    "crm.order.cancelled",
    "webhook",  # a provider event from connect.events.v1
)
CONSUMER_KINDS: tuple[str, ...] = ("crm", "webhook")  # whose offsets the commit carries
RELAY_KINDS: tuple[str, ...] = ("status",)
OPERATOR_KINDS: tuple[str, ...] = ("replay", "cancel", "retry_now")

_STEP_POINTS = (
    "step.before_intent_commit",  # step transaction 1: intent stored, not committed
    "step.after_intent_commit",  # intent durable, provider not yet called
    "provider.before_call",  # about to send a keyed (mutating) request
    "provider.after_call",  # the provider answered; the answer is not recorded anywhere yet
    "step.before_outcome_commit",  # step transaction 2: outcome + transition, not committed
    "step.after_outcome_commit",
)

KINDS: dict[str, tuple[str, ...]] = {
    "intake.before_commit": INTAKE_KINDS,  # event applied, its transaction not yet committed
    "intake.after_commit": INTAKE_KINDS,  # committed, the Kafka offset not yet
    "consumer.before_offset_commit": CONSUMER_KINDS,
    "consumer.after_offset_commit": CONSUMER_KINDS,
    **dict.fromkeys(_STEP_POINTS, STEP_KINDS),
    "relay.before_publish": RELAY_KINDS,  # outbox rows read, nothing sent
    "relay.after_publish": RELAY_KINDS,  # the broker acknowledged, rows not yet marked published
    "operator.before_commit": OPERATOR_KINDS,  # an operator's change written, not committed
    "operator.after_commit": OPERATOR_KINDS,  # committed, the command has not answered yet
}
"""Each point and the kinds of work it is reached with: every pair here can happen."""

FAULT_POINTS: tuple[str, ...] = tuple(KINDS)
"""Every point, in the order a line item meets them (operator actions last)."""

MARKER = "FAULT_POINT_FIRED"

_armed: dict[tuple[str, str | None], int] = {}
_SPEC = re.compile(r"(?P<point>[^@:]+)(?:@(?P<kind>[^:]+))?(?::(?P<count>.*))?")


class FaultSpecError(ValueError):
    """`ORCHESTRATOR_FAULT_POINT` does not name known points (and kinds) with positive counts."""


def parse_spec(spec: str) -> dict[tuple[str, str | None], int]:
    """`"point[@kind][:n][,...]"` → {(point, kind or None): n}; unknown points or kinds are refused."""
    armed: dict[tuple[str, str | None], int] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        match = _SPEC.fullmatch(part)
        point, kind, count = (match["point"], match["kind"], match["count"]) if match else (part, None, None)
        if point not in KINDS:
            raise FaultSpecError(f"unknown fault point {point!r}; known: {', '.join(FAULT_POINTS)}")
        if kind is not None and kind not in KINDS[point]:
            raise FaultSpecError(
                f"fault point {point!r} is never reached for {kind!r}; its kinds: {', '.join(KINDS[point])}"
            )
        if count and not (count.isdigit() and int(count) >= 1):
            raise FaultSpecError(f"fault point {part!r}: count must be a positive integer, got {count!r}")
        armed[(point, kind)] = int(count or 1)
    return armed


def arm(spec: str | None) -> None:
    """Replace what is armed (None or "" disarms everything)."""
    _armed.clear()
    if spec:
        _armed.update(parse_spec(spec))


def reach(point: str, kind: str) -> None:
    """Called at each named point with the kind of work at hand; kills this process when an armed
    count for the pair (or for the point, whatever the kind) runs out."""
    if not _armed:
        return
    for key in ((point, kind), (point, None)):
        remaining = _armed.get(key)
        if remaining is None:
            continue
        if remaining > 1:
            _armed[key] = remaining - 1
            continue
        os.write(2, f"\n{MARKER} {point} {kind}\n".encode())
        os.kill(os.getpid(), signal.SIGKILL)
