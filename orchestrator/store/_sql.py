"""Statement building shared by the store's modules: numbered parameters, and the timer upsert
that several statements embed (one definition, so its conflict rule cannot drift)."""

from __future__ import annotations

from typing import Any


class Params:
    """Collects a statement's parameters in order and hands out their `$n` placeholders, so a
    statement assembled from parts never hard-codes a number another part also uses."""

    def __init__(self, *values: Any) -> None:
        self.values: list[Any] = list(values)

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def upsert_timer(*, workflow_id: str, order_id: str, kind: str, due_at: str, fresh: bool = False) -> str:
    """Make sure a timer of `kind` for this target fires by `due_at`: a pending one is moved
    earlier, never later, so a poke cannot postpone a step. Arguments are placeholders. `fresh`:
    the first step of new work, claimed after the steps of work already started (migration 0006);
    a pending timer stays fresh only while every upsert says so."""
    return f"""INSERT INTO timers (workflow_id, order_id, kind, due_at, payload, fresh)
           VALUES ({workflow_id}, {order_id}, {kind}, {due_at}, '{{}}', {"true" if fresh else "false"})
           ON CONFLICT (target, kind) WHERE fired_at IS NULL
           DO UPDATE SET due_at = LEAST(timers.due_at, EXCLUDED.due_at),
                         fresh = timers.fresh AND EXCLUDED.fresh"""
