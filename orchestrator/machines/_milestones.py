"""What states mean to the rest of the system, and the order-level state derived from its items.

Order state (`derive_order_state`), from the states of all of the order's line items:

| order state           | when                                                                    |
|-----------------------|-------------------------------------------------------------------------|
| `cancelled`           | every item is `cancelled`                                               |
| `in_progress`         | at least one item is not settled (settled = terminal or `failed`)       |
| `activated`           | every item is `activated` or `completed`                                |
| `partially_activated` | all settled; some `activated`/`completed`, some `failed` or `cancelled` |
| `failed`              | all settled; none `activated`/`completed`; at least one `failed`        |

`failed` counts as settled because it waits for an operator, not for the system; `cancelling` is
not settled (compensation is still running). The rules cover every combination exactly once.
"""

from __future__ import annotations

from collections.abc import Iterable

from orchestrator.events import LineItemState, OrderState

SUCCESS_STATES = frozenset({LineItemState.ACTIVATED.value, LineItemState.COMPLETED.value})
"""Done, and done well."""

TERMINAL_STATES = frozenset({*SUCCESS_STATES, LineItemState.CANCELLED.value})
"""Nothing more will happen (the machines' final states)."""

NEEDS_OPERATOR_STATES = frozenset({LineItemState.FAILED.value})
"""Stopped until an operator amends, resumes or cancels (not terminal: it can be replayed)."""


def is_terminal(state: str) -> bool:
    """True for `activated`, `completed` and `cancelled`."""
    return state in TERMINAL_STATES


def needs_operator(state: str) -> bool:
    """True for `failed`."""
    return state in NEEDS_OPERATOR_STATES


def is_settled(state: str) -> bool:
    """Terminal or waiting for an operator: the system itself will do nothing more."""
    return is_terminal(state) or needs_operator(state)


def derive_order_state(item_states: Iterable[str]) -> OrderState:
    """The order's state from its line items' states (see the module docstring for the rules).

    An order has at least one line item; an empty iterable is a caller bug and raises ValueError.
    """
    states = list(item_states)
    if not states:
        raise ValueError("an order has at least one line item")
    if all(state == LineItemState.CANCELLED for state in states):
        return OrderState.CANCELLED
    if not all(is_settled(state) for state in states):
        return OrderState.IN_PROGRESS
    succeeded = sum(state in SUCCESS_STATES for state in states)
    if succeeded == len(states):
        return OrderState.ACTIVATED
    if succeeded:
        return OrderState.PARTIALLY_ACTIVATED
    return OrderState.FAILED


POLLING_STATES = frozenset(
    {
        LineItemState.SUBMITTED,
        LineItemState.PORTING_PENDING,
        LineItemState.TEMP_NUMBER_ACTIVE,
        LineItemState.ACTIVATION_SCHEDULED,
        LineItemState.CANCELLING,
    }
)
"""States whose next step reads the provider: the only ones a provider event can move on
(`cancelling` polls once its order was submitted)."""

PORTING_STATES = frozenset({LineItemState.PORTING_PENDING, LineItemState.TEMP_NUMBER_ACTIVE})
"""A port-in in progress on a subscription the provider has: corrected porting details go to the
provider here, and a port stuck here is in jeopardy."""

BEFORE_SUBMISSION_STATES = frozenset(
    {LineItemState.RECEIVED, LineItemState.NUMBER_LEASED, LineItemState.AWAITING_SUBMISSION}
)
"""Not yet part of a submitted provider order: an amendment can still change the item."""

ORDER_STEP_STATES = frozenset(
    {LineItemState.AWAITING_SUBMISSION, LineItemState.FAILED, LineItemState.CANCELLED}
)
"""An item arriving here gives its order's step something to do: all added → submit; all
cancelled → cancel the order; a failed item may unblock the others' submission."""
