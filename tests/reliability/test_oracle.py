"""The expected-outcome oracle on a real run, and each deliberate breakage caught.

One real run (Kafka, Postgres, an `orchestrator run` process and the sandbox over HTTP) of one
order of every traffic kind — every line item type, leased, assigned and ported numbers, a
rejected port, a corrected port, whole and partial cancellations, an amendment, duplicates and
poison — must pass every invariant, the oracle's included. Then the run's own observations are
damaged the ways a real bug would damage them (a line item dropped, a cancellation ignored, an
amendment skipped, a subscription left live after a cancel, ...) and each must be reported: an
oracle that cannot fail proves nothing.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.localstack import LocalStack
from orchestrator.store import migrate
from tests.conftest import create_database
from tests.reliability.harness import KINDS, drain, order_messages, rig
from tests.reliability.invariants import Observations, Record, check, observe
from tests.reliability.oracle import OUTCOME, PROVIDER


@pytest.fixture(scope="module")
async def real_run(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Observations:
    """One drained run with an order of every kind, observed once for every test below."""
    url = await create_database(stack.database_url, prefix="o")
    await migrate(url)
    log_dir: Path = tmp_path_factory.mktemp("oracle")
    async with rig(kafka=stack.kafka, database_url=url, log_dir=log_dir) as r:
        r.worker()
        messages = []
        for n, kind in enumerate(KINDS):  # one of each, in a fixed order: the damage below finds them
            messages += order_messages(random.Random(n), 1, prefix=f"k{n}", kinds=(kind,), catalog=r.catalog)
        await r.publish(messages)
        await drain(r, timeout_s=120)
        observed = await observe(database_url=url, kafka=r.settings.kafka, control=r.control)
        await r.stop_all()
    return observed


def _workflow(obs: Observations, kind: str, line_item: str = "li-1") -> dict[str, Any]:
    order = f"k{KINDS.index(kind)}-0-{kind}"
    found = [w for w in obs.workflows if w["order_id"] == order and w["line_item_id"] == line_item]
    assert len(found) == 1, f"the run has no {order}/{line_item}"
    return found[0]


def _history(obs: Observations, w: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in obs.transitions if t["workflow_id"] == w["workflow_id"]]


def _status_of(obs: Observations, w: dict[str, Any], event_type: str) -> list[Record]:
    def is_it(record: Record) -> bool:
        event = json.loads(record.value or b"{}")
        data = event.get("data") or {}
        return event.get("type") == event_type and data.get("workflowId") == str(w["workflow_id"])

    return [r for r in obs.status if is_it(r)]


def _subscription(obs: Observations, w: dict[str, Any]) -> dict[str, Any]:
    sub_id = w["context"]["subscription_id"]
    return next(s for s in obs.entities["subscriptions"] if s["subscriptionId"] == sub_id)


# --- the damage a real bug would do -----------------------------------------------------------


def _drop_a_line_item(obs: Observations) -> None:
    """The engine accepted the order but never created one of its line items."""
    w = _workflow(obs, "bundle", "li-ext")
    obs.workflows.remove(w)
    obs.transitions[:] = [t for t in obs.transitions if t["workflow_id"] != w["workflow_id"]]
    obs.status[:] = [r for r in obs.status if str(w["workflow_id"]).encode() not in (r.value or b"")]


def _ignore_a_cancel(obs: Observations) -> None:
    """The cancellation was consumed (inbox row) but the item went on and activated."""
    w = _workflow(obs, "partial_cancel", "li-2")
    assert w["state"] == "cancelled"
    kept = [t for t in _history(obs, w) if t["event"] not in ("cancel", "compensated")]
    obs.transitions[:] = [t for t in obs.transitions if t["workflow_id"] != w["workflow_id"]] + kept
    w["state"] = "activated"


def _skip_an_amendment(obs: Observations) -> None:
    """The amendment was consumed and never answered."""
    w = _workflow(obs, "amend")
    answers = _status_of(obs, w, "provisioning.line_item.amended")
    assert answers, "the amend order got no answer in this run"
    obs.status[:] = [r for r in obs.status if r not in answers]


def _amendment_said_applied_but_not_held(obs: Observations) -> None:
    """The CRM was told the amendment applied; the item still holds the old offering."""
    w = _workflow(obs, "amend")
    [answer] = [json.loads(r.value or b"{}") for r in _status_of(obs, w, "provisioning.line_item.amended")]
    assert answer["data"]["outcome"] == "applied", answer
    w["spec"] = w["spec"] | {"productOfferingId": "mobile-plan-basic"}


def _live_after_cancel(obs: Observations) -> None:
    """An item ends cancelled while its subscription stays ACTIVATED at the provider."""
    w = _workflow(obs, "assigned")
    last = max(t["sequence"] for t in _history(obs, w))
    obs.transitions.append(
        {"workflow_id": w["workflow_id"], "sequence": last + 1, "event": "cancel", "from_state": "activated",
         "to_state": "cancelled", "cause": "operator:test"}
    )  # fmt: skip
    w["state"] = "cancelled"


def _left_in_the_cart(obs: Observations) -> None:
    """Cancelled, yet still a line item of a provider cart that can be submitted."""
    w = _workflow(obs, "partial_cancel", "li-2")
    assert w["state"] == "cancelled"
    order = next(o for o in obs.orders if o["order_id"] == w["order_id"])
    cart = next(o for o in obs.entities["orders"] if o["orderId"] == order["provider_order_id"])
    cart["state"] = "CONFIGURED"
    cart["lineItemIds"] = sorted({*cart["lineItemIds"], "li-2"})


def _rejected_port_activated(obs: Observations) -> None:
    """The sandbox's plan rejected the port; the database says activated."""
    w = _workflow(obs, "port_rejected")
    assert w["state"] == "failed"
    w["state"], w["error"] = "activated", None


def _wrong_number(obs: Observations) -> None:
    """Activated on another number than the one the CRM leased (database and provider agree)."""
    w = _workflow(obs, "leased")
    other = "+15550009999"
    w["context"] = w["context"] | {"msisdn": other}
    _subscription(obs, w)["msisdn"] = other
    for record in _status_of(obs, w, "provisioning.line_item.state_changed"):
        event = json.loads(record.value or b"{}")
        event["data"]["msisdn"] = other
        obs.status[obs.status.index(record)] = Record(
            record.topic, record.partition, record.offset, record.key, json.dumps(event).encode()
        )


def _status_names_another_number(obs: Observations) -> None:
    w = _workflow(obs, "assigned")
    w["context"] = w["context"] | {"msisdn": "+15550009999"}


def _not_activated_at_provider(obs: Observations) -> None:
    _subscription(obs, _workflow(obs, "port"))["status"] = "PENDING"


def _never_fulfilled(obs: Observations) -> None:
    w = _workflow(obs, "extras", "li-top")
    order = next(o for o in obs.orders if o["order_id"] == w["order_id"])
    obs.effects[:] = [
        e
        for e in obs.effects
        if not (
            e["effect"] == "line_item.fulfilled"
            and e["entityId"] == order["provider_order_id"]
            and e["data"]["lineItemId"] == "li-top"
        )
    ]


def _change_never_made(obs: Observations) -> None:
    w = _workflow(obs, "extras", "li-licchg")
    obs.effects[:] = [
        e
        for e in obs.effects
        if not (e["effect"] == "license.offering_changed" and e["entityId"] == w["spec"]["licenseId"])
    ]


def _stray_subscription(obs: Observations) -> None:
    """The provider created a subscription in our order for a line item the database lacks."""
    w = _workflow(obs, "assigned")
    order = next(o for o in obs.orders if o["order_id"] == w["order_id"])
    obs.effects.append(
        {"effect": "subscription.created", "entityId": "S-stray", "idempotencyKey": None,
         "data": {"orderId": order["provider_order_id"], "lineItemId": "li-9"}}
    )  # fmt: skip


def _old_port_details(obs: Observations) -> None:
    """The CRM's correction was answered applied, but the provider still holds the first details."""
    w = _workflow(obs, "port_corrected")
    [answer] = [json.loads(r.value or b"{}") for r in _status_of(obs, w, "provisioning.line_item.amended")]
    assert answer["data"]["outcome"] == "applied", answer
    port = next(p for p in obs.entities["ports"] if p["subscriptionId"] == w["context"]["subscription_id"])
    port["detailsDigest"] = "0" * 64


def _effect_twice(obs: Observations) -> None:
    topup = next(e for e in obs.effects if e["effect"] == "topup.applied")
    obs.effects.append(copy.deepcopy(topup))


def _unclassified_effect(obs: Observations) -> None:
    obs.effects.append(
        {"effect": "subscription.teleported", "entityId": "S1", "idempotencyKey": None, "data": {}}
    )


def _nothing_assigned(obs: Observations) -> None:
    obs.end_offsets.clear()
    obs.committed.clear()


def _provider_not_read(obs: Observations) -> None:
    obs.entities.clear()


# breakage -> (the invariant that must report it, words its report must contain, the damage)
BREAKAGES: dict[str, tuple[str, str, Callable[[Observations], None]]] = {
    "drop_a_line_item": (OUTCOME, "the database has no such item", _drop_a_line_item),
    "ignore_a_cancel": (OUTCOME, "neither carried out nor refused", _ignore_a_cancel),
    "skip_an_amendment": (OUTCOME, "1 amendments accepted, 0 answered", _skip_an_amendment),
    "amendment_said_applied_but_not_held": (
        OUTCOME, "the last applied amendment asked", _amendment_said_applied_but_not_held
    ),
    "rejected_port_activated": (OUTCOME, "say failed (port_failed)", _rejected_port_activated),
    "status_names_another_number": (OUTCOME, "last status event says msisdn", _status_names_another_number),
    "old_port_details": (OUTCOME, "other porting details", _old_port_details),
    "live_after_cancel": (PROVIDER, "cancelled, yet subscription", _live_after_cancel),
    "left_in_the_cart": (PROVIDER, "still in the provider's cart", _left_in_the_cart),
    "wrong_number": (PROVIDER, "the CRM chose", _wrong_number),
    "not_activated_at_provider": (PROVIDER, "the provider has it PENDING", _not_activated_at_provider),
    "never_fulfilled": (PROVIDER, "never fulfilled it", _never_fulfilled),
    "change_never_made": (PROVIDER, "was never changed to", _change_never_made),
    "stray_subscription": (PROVIDER, "for a line item we do not know", _stray_subscription),
    "provider_not_read": (PROVIDER, "ledger or entities were not read", _provider_not_read),
    "effect_twice": ("effects_once", "topup.applied applied 2 times", _effect_twice),
    "unclassified_effect": ("effects_once", "is not classified", _unclassified_effect),
    "nothing_assigned": ("consumed_accounted", "no partition was read", _nothing_assigned),
}  # fmt: skip


async def test_a_real_run_of_every_kind_meets_the_oracle(real_run: Observations) -> None:
    report = check(real_run)
    assert report.ok, report.explain()
    kinds = {w["order_id"].split("-0-", 1)[1] for w in real_run.workflows}
    assert kinds == set(KINDS) - {"poison"}, kinds  # poison makes no line item
    assert report.failures == {"port_failed": 1}, report.explain()  # the rejected port, and only it
    for invariant in (OUTCOME, PROVIDER):
        assert report.checked[invariant] == len(real_run.workflows), report.explain()


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
async def test_each_deliberate_breakage_is_caught(real_run: Observations, breakage: str) -> None:
    invariant, words, damage = BREAKAGES[breakage]
    obs = copy.deepcopy(real_run)
    damage(obs)
    report = check(obs)
    caught = [v for v in report.violations if v.invariant == invariant and words in v.detail]
    assert caught, report.explain()
