"""derive_order_state: the order's state from its line items' states."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.events import LineItemState, OrderState
from orchestrator.machines import derive_order_state, is_settled


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        (["received"], OrderState.IN_PROGRESS),
        (["activated", "porting_pending"], OrderState.IN_PROGRESS),
        (["activated", "cancelling"], OrderState.IN_PROGRESS),
        (["activated", "completed"], OrderState.ACTIVATED),
        (["activated"], OrderState.ACTIVATED),
        (["activated", "failed"], OrderState.PARTIALLY_ACTIVATED),
        (["completed", "cancelled"], OrderState.PARTIALLY_ACTIVATED),
        (["failed", "failed"], OrderState.FAILED),
        (["failed", "cancelled"], OrderState.FAILED),
        (["cancelled", "cancelled"], OrderState.CANCELLED),
    ],
)
def test_examples(states: list[str], expected: OrderState) -> None:
    assert derive_order_state(states) is expected


def test_an_order_without_line_items_is_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="at least one line item"):
        derive_order_state([])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([state.value for state in LineItemState]), min_size=1, max_size=8))
def test_the_rules_hold_for_any_mix(states: list[str]) -> None:
    result = derive_order_state(states)
    success = {"activated", "completed"}

    if result is OrderState.CANCELLED:
        assert set(states) == {"cancelled"}
    elif result is OrderState.IN_PROGRESS:
        assert not all(is_settled(state) for state in states)
    elif result is OrderState.ACTIVATED:
        assert set(states) <= success
    elif result is OrderState.PARTIALLY_ACTIVATED:
        assert set(states) & success
        assert set(states) & {"failed", "cancelled"}
        assert all(is_settled(state) for state in states)
    else:
        assert result is OrderState.FAILED
        assert "failed" in states
        assert not set(states) & success
        assert all(is_settled(state) for state in states)
