"""The checker catches what it claims to: each invariant is broken once on purpose, on hand-made
observations of a tiny clean run, and must be reported (a checker that cannot fail proves nothing).
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable

import pytest

from tests.reliability.harness import crm_event
from tests.reliability.invariants import Observations, Record, check

CRM = "crm.orders.v1"
WORKFLOW = uuid.UUID("00000000-0000-0000-0000-000000000001")
EVENT_ID = "evt-1"
MSISDN = "+15550000001"


def _event(event_type: str, data: dict[str, object], offset: int) -> Record:
    """A status CloudEvent as the relay publishes it (only the fields the checker reads matter)."""
    event_id = str(uuid.uuid5(WORKFLOW, f"{event_type}/{data['sequence']}"))
    value = json.dumps({"id": event_id, "type": event_type, "subject": "o-1", "data": data}).encode()
    return Record("status", 0, offset, b"o-1", value)


def _status(sequence: int, state: str, offset: int) -> Record:
    data = {
        "orderId": "o-1",
        "lineItemId": "li-1",
        "workflowId": str(WORKFLOW),
        "sequence": sequence,
        "state": state,
        "msisdn": MSISDN if state == "activated" else None,
    }
    return _event("provisioning.line_item.state_changed", data, offset)


def _order_status(offset: int) -> Record:
    data = {"orderId": "o-1", "sequence": 1, "state": "activated"}
    return _event("provisioning.order.state_changed", data, offset)


PATH = [
    ("received", "", "received"),
    ("item_added", "received", "awaiting_submission"),
    ("order_submitted", "awaiting_submission", "submitted"),
    ("activate", "submitted", "activated"),
]


def clean() -> Observations:
    """One order, one subscription, activated: every invariant holds."""
    submitted = crm_event(
        "crm.order.submitted",
        {"orderId": "o-1", "customer": {"customerId": "c"}, "lineItems": [
            {"type": "SUBSCRIPTION", "lineItemId": "li-1", "productOfferingId": "p"}]},
        event_id=EVENT_ID,
    )  # fmt: skip
    status = [_status(i + 1, to, i) for i, (_, _frm, to) in enumerate(PATH)]
    return Observations(
        workflows=[
            {
                "workflow_id": WORKFLOW,
                "order_id": "o-1",
                "line_item_id": "li-1",
                "line_item_type": "SUBSCRIPTION",
                "definition_version": 1,
                "state": "activated",
                "sequence": 4,
                "error": None,
                "spec": {"type": "SUBSCRIPTION", "lineItemId": "li-1", "productOfferingId": "p"},
                "context": {"subscription_id": "S1", "msisdn": MSISDN},
            }
        ],
        transitions=[
            {
                "workflow_id": WORKFLOW,
                "sequence": i + 1,
                "event": e,
                "from_state": f,
                "to_state": t,
                "cause": "x",
            }
            for i, (e, f, t) in enumerate(PATH)
        ],
        orders=[{"order_id": "o-1", "state": "activated", "status_sequence": 1, "provider_order_id": "P1"}],
        inbox=[
            {"source": "urn:crm:reliability", "event_id": EVENT_ID, "topic": CRM, "partition": 0, "offset": 0}
        ],
        unpublished_outbox=0,
        consumed=[Record(CRM, 0, 0, b"o-1", submitted, (("content-type", b"application/cloudevents+json"),))],
        committed={(CRM, 0): 1},
        end_offsets={(CRM, 0): 1},
        status=[*status, _order_status(len(status))],
        dlq=[],
        effects=[
            {
                "effect": "order.created",
                "entityId": "P1",
                "idempotencyKey": "order-o-1-create_order-g0",
                "data": {},
            },
            {
                "effect": "line_item.added",
                "entityId": "P1",
                "idempotencyKey": "wf-x-add_item-g0",
                "data": {"lineItemId": "li-1"},
            },
            {
                "effect": "subscription.created",
                "entityId": "S1",
                "idempotencyKey": None,
                "data": {"orderId": "P1", "lineItemId": "li-1"},
            },
            {
                "effect": "line_item.fulfilled",
                "entityId": "P1",
                "idempotencyKey": None,
                "data": {"lineItemId": "li-1", "type": "SUBSCRIPTION"},
            },
        ],
        crm_topic=CRM,
        entities={
            "orders": [
                {"orderId": "P1", "state": "COMPLETED", "lineItemIds": ["li-1"], "createdEntities": {}}
            ],
            "subscriptions": [
                {"subscriptionId": "S1", "status": "ACTIVATED", "msisdn": MSISDN, "productOfferingId": "p"}
            ],
        },
    )


def test_a_clean_run_passes_every_invariant() -> None:
    report = check(clean())
    assert report.ok, report.explain()
    assert all(report.checked[name] > 0 for name in report.checked)


def _stranded(obs: Observations) -> None:
    obs.workflows[0]["state"] = "submitted"


def _double_effect(obs: Observations) -> None:
    obs.effects.append(copy.deepcopy(obs.effects[2]) | {"entityId": "S2"})


def _same_key_twice(obs: Observations) -> None:
    obs.effects.append(copy.deepcopy(obs.effects[1]))


def _two_provider_orders(obs: Observations) -> None:
    obs.effects.append(obs.effects[0] | {"entityId": "P2"})


def _gap(obs: Observations) -> None:
    del obs.status[1]


def _out_of_order(obs: Observations) -> None:
    obs.status[1], obs.status[2] = obs.status[2], obs.status[1]


def _same_id_other_bytes(obs: Observations) -> None:
    event = json.loads(obs.status[0].value or b"")
    event["data"]["state"] = "failed"
    obs.status.append(Record("status", 0, 99, b"o-1", json.dumps(event).encode()))


def _unpublished(obs: Observations) -> None:
    obs.unpublished_outbox = 2


def _not_consumed(obs: Observations) -> None:
    obs.committed[(CRM, 0)] = 0


def _consumed_without_effect(obs: Observations) -> None:
    obs.inbox.clear()


def _dead_letter_with_inbox_row(obs: Observations) -> None:
    headers = (
        ("dlq_source_topic", CRM.encode()),
        ("dlq_source_partition", b"0"),
        ("dlq_source_offset", b"0"),
    )
    obs.dlq.append(Record("dlq", 0, 0, b"o-1", b"x", headers))


def _history_gap(obs: Observations) -> None:
    del obs.transitions[2]


def _interleaved(obs: Observations) -> None:
    obs.transitions[1], obs.transitions[2] = obs.transitions[2], obs.transitions[1]


def _no_such_edge(obs: Observations) -> None:
    obs.transitions[3] = obs.transitions[3] | {"event": "compensated"}


def _left_terminal(obs: Observations) -> None:
    obs.transitions.append(
        {
            "workflow_id": WORKFLOW,
            "sequence": 5,
            "event": "fail",
            "from_state": "activated",
            "to_state": "failed",
        }
    )


BREAKAGES: dict[str, tuple[str, Callable[[Observations], None]]] = {
    "stranded": ("settled", _stranded),
    "double_effect": ("effects_once", _double_effect),
    "same_key_twice": ("effects_once", _same_key_twice),
    "two_provider_orders": ("effects_once", _two_provider_orders),
    "gap": ("status_gap_free", _gap),
    "out_of_order": ("status_gap_free", _out_of_order),
    "same_id_other_bytes": ("status_gap_free", _same_id_other_bytes),
    "unpublished": ("status_gap_free", _unpublished),
    "not_consumed": ("consumed_accounted", _not_consumed),
    "consumed_without_effect": ("consumed_accounted", _consumed_without_effect),
    "dead_letter_with_inbox_row": ("consumed_accounted", _dead_letter_with_inbox_row),
    "history_gap": ("transitions_valid", _history_gap),
    "interleaved": ("transitions_valid", _interleaved),
    "no_such_edge": ("transitions_valid", _no_such_edge),
    "left_terminal": ("transitions_valid", _left_terminal),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_each_broken_invariant_is_reported(breakage: str) -> None:
    invariant, damage = BREAKAGES[breakage]
    obs = clean()
    damage(obs)
    report = check(obs)
    assert invariant in {v.invariant for v in report.violations}, report.explain()
