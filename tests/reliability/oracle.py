"""The expected-outcome oracle: where every line item must end, and does the world agree?

The other invariants prove "nothing twice". This module proves "nothing lost, nothing wrong": it
derives, from what the CRM sent (the consumed `crm.orders.v1` records that were accepted) and what
the sandbox was told to do (its port plans), where each line item must end, then holds the
database, the status topic and the provider's ledger and entities to it. It reads nothing the
orchestrator decides for itself except the evidence a refusal leaves (a cancellation that came
after the item settled is kept in `context.refused_cancellations`; an amendment's answer is an
`amended` status event), and each such piece of evidence is checked for being truthful.

Two invariants (names as they appear in reports):

- `outcome_expected`: every line item of every accepted order exists exactly once with its type
  (none dropped, none invented); every accepted cancellation was either carried out (a `cancel`
  transition) or refused because the item had already settled; the item ends where the CRM asked:
  `cancelled` once cancelled, else `failed` with `port_failed` exactly when the sandbox's plan
  rejected its port (or `activated` on the temporary number when the CRM said to keep it), else
  `activated` (`completed` for one-off items); every amendment got exactly one `amended` answer, and
  an applied one is what the item holds; the last status event names the database's number.
- `provider_agrees`: the provider's ledger and entities say the same: a settled item was fulfilled
  in its provider order; an activated subscription is ACTIVATED at the provider on the number the
  database and the status topic give (the CRM's number when it chose one), with the offering asked
  for; a cancelled item left nothing live (its subscription cancelled, a license it made
  cancelled, its provider cart cancelled or without it); a rejected port is FAILED at the
  provider; licenses, add-ons and changes exist as asked; the provider holds no subscription
  created for a line item the database does not know.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orchestrator.events import InvalidEventError, decode_crm_event
from orchestrator.sandbox import details_digest

if TYPE_CHECKING:
    from tests.reliability.invariants import Observations, Report

OUTCOME = "outcome_expected"
PROVIDER = "provider_agrees"
# The contract's one-off types end `completed`; every other type ends `activated`.
ONE_OFF_TYPES = frozenset({"TOP_UP", "EXTERNAL_PRODUCT", "EXTERNAL_ITEM"})
# Provider carts: an order in one of these states can still change.
CART_STATES = frozenset({"PENDING", "CONFIGURED"})
AMENDED_EVENT = "provisioning.line_item.amended"
STATE_EVENT = "provisioning.line_item.state_changed"

ItemKey = tuple[str, str]  # (CRM orderId, lineItemId)


@dataclass
class Asked:
    """What the CRM asked of one line item, in the order it asked."""

    order_id: str
    line_item_id: str
    line_item_type: str
    submitted: dict[str, Any]
    updates: list[dict[str, Any]] = field(default_factory=list)  # each accepted update's lineItem
    cancels: list[str] = field(default_factory=list)  # accepted cancellations (CloudEvent ids)


def crm_asks(obs: Observations) -> dict[ItemKey, Asked]:
    """Every line item the CRM asked for, from the accepted CRM records (those with an inbox row),
    each event counted once however often it was delivered."""
    inbox = {(row["source"], row["event_id"]) for row in obs.inbox}
    asked: dict[ItemKey, Asked] = {}
    seen: set[tuple[str, str]] = set()
    for record in sorted(obs.consumed, key=lambda r: (r.topic, r.partition, r.offset)):
        if record.topic != obs.crm_topic:
            continue
        try:
            event = decode_crm_event(key=record.key, value=record.value, headers=record.headers)
        except InvalidEventError:
            continue  # dead-lettered: `consumed_accounted` holds it to account
        key = event.dedup_key
        if key not in inbox or key in seen:
            continue  # refused (dead-lettered) or a redelivery of an event already counted
        seen.add(key)
        raw = json.loads(record.value or b"{}")["data"]
        kind = event.type
        if kind == "crm.order.submitted":
            for item in raw["lineItems"]:
                item_key = (raw["orderId"], item["lineItemId"])
                asked[item_key] = Asked(raw["orderId"], item["lineItemId"], item["type"], item)
        elif kind == "crm.order.line_item.updated":
            found = asked.get((raw["orderId"], raw["lineItem"]["lineItemId"]))
            if found is not None:
                found.updates.append(raw["lineItem"])
        elif kind == "crm.order.cancelled":
            named = raw.get("lineItemIds")
            for item_key, found in asked.items():
                if item_key[0] == raw["orderId"] and (named is None or item_key[1] in named):
                    found.cancels.append(key[1])
    return asked


@dataclass
class _World:
    """The provider's side, indexed for the checks."""

    subscriptions: dict[str, dict[str, Any]]
    orders: dict[str, dict[str, Any]]
    ports: dict[str, dict[str, Any]]
    addons: list[dict[str, Any]]
    licenses: dict[str, dict[str, Any]]
    fulfilled: set[tuple[str, str]]  # (provider order id, lineItemId)
    created: dict[tuple[str, str], list[str]]  # (provider order id, lineItemId) -> subscription ids
    changed: dict[tuple[str, str], set[str]]  # (effect, entity id) -> offerings it was changed to
    effects: list[dict[str, Any]]

    @classmethod
    def of(cls, obs: Observations) -> _World:
        entities = obs.entities
        created: dict[tuple[str, str], list[str]] = defaultdict(list)
        changed: dict[tuple[str, str], set[str]] = defaultdict(set)
        fulfilled: set[tuple[str, str]] = set()
        for e in obs.effects:
            data = e.get("data") or {}
            if e["effect"] == "line_item.fulfilled":
                fulfilled.add((e["entityId"], str(data.get("lineItemId"))))
            elif e["effect"] == "subscription.created":
                created[(str(data.get("orderId")), str(data.get("lineItemId")))].append(e["entityId"])
            elif e["effect"].endswith(".offering_changed"):
                changed[(e["effect"], e["entityId"])].add(str(data.get("productOfferingId")))
        return cls(
            subscriptions={s["subscriptionId"]: s for s in entities.get("subscriptions", [])},
            orders={o["orderId"]: o for o in entities.get("orders", [])},
            ports={p["subscriptionId"]: p for p in entities.get("ports", [])},
            addons=list(entities.get("addons", [])),
            licenses={lic["licenseId"]: lic for lic in entities.get("licenses", [])},
            fulfilled=fulfilled,
            created=created,
            changed=changed,
            effects=obs.effects,
        )


def _notices(obs: Observations) -> tuple[dict[str, list[dict[str, Any]]], dict[str, dict[str, Any]]]:
    """Per workflow id: its amendment answers in sequence order, and its last state change."""
    answers: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    last: dict[str, dict[str, Any]] = {}
    for record in obs.status:
        try:
            event = json.loads(record.value or b"")
        except ValueError:
            continue  # `status_gap_free` reports what cannot be read
        if not isinstance(event, dict):
            continue
        data = event.get("data") or {}
        workflow = str(data.get("workflowId"))
        if event.get("type") == AMENDED_EVENT:
            answers[workflow][int(data["sequence"])] = data  # keyed by sequence: duplicates collapse
        elif event.get("type") == STATE_EVENT and (
            workflow not in last or int(data["sequence"]) >= int(last[workflow]["sequence"])
        ):
            last[workflow] = data
    ordered = {w: [by_seq[s] for s in sorted(by_seq)] for w, by_seq in answers.items()}
    return ordered, last


def check_outcomes(obs: Observations, report: Report) -> None:
    """Both oracle invariants over one run's observations."""
    asked = crm_asks(obs)
    workflows = {(w["order_id"], w["line_item_id"]): w for w in obs.workflows}
    history: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in obs.transitions:
        history[str(t["workflow_id"])].append(t)
    provider_orders = {o["order_id"]: o.get("provider_order_id") for o in obs.orders}
    answers, last_state = _notices(obs)
    world = _World.of(obs)
    plans = obs.scenario.get("ports") or {}
    default_plan = obs.scenario.get("defaultPort") or {"outcome": "COMPLETED"}

    for key in sorted(workflows.keys() - asked.keys()):
        report.add(OUTCOME, "/".join(key), "a line item the CRM never asked for (or whose order was refused)")
    for key, wish in sorted(asked.items()):
        report.checked[OUTCOME] += 1
        subject = "/".join(key)
        w = workflows.get(key)
        if w is None:
            report.add(
                OUTCOME, subject, "the CRM asked for it in an accepted order; the database has no such item"
            )
            continue
        if w["line_item_type"] != wish.line_item_type:
            report.add(
                OUTCOME, subject, f"a {w['line_item_type']}, the CRM asked for a {wish.line_item_type}"
            )
        steps = sorted(history.get(str(w["workflow_id"]), []), key=lambda t: t["sequence"])
        item_answers = answers.get(str(w["workflow_id"]), [])
        _check_cancels(wish, w, steps, report, subject)
        plan = (
            plans.get(str(wish.submitted.get("msisdn")), default_plan)
            if wish.submitted.get("porting")
            else None
        )
        _check_end(wish, w, steps, plan, report, subject)
        replays = sum(1 for t in steps if t["event"] == "resume" and str(t["cause"]).startswith("operator:"))
        _check_amendments(wish, w, item_answers, replays, world, report, subject)
        last = last_state.get(str(w["workflow_id"]))
        msisdn = (w.get("context") or {}).get("msisdn")
        if last is not None and last.get("msisdn") != msisdn:
            report.add(
                OUTCOME,
                subject,
                f"the last status event says msisdn {last.get('msisdn')}, the database {msisdn}",
            )
        report.checked[PROVIDER] += 1
        _check_provider(wish, w, provider_orders.get(w["order_id"]), world, report, subject)
    _check_strays(workflows, provider_orders, world, report)


def _events(steps: Iterable[Mapping[str, Any]]) -> list[str]:
    return [str(t["event"]) for t in steps]


def _check_cancels(
    wish: Asked, w: Mapping[str, Any], steps: list[dict[str, Any]], report: Report, subject: str
) -> None:
    """Each accepted cancellation was carried out, or refused because the item had settled."""
    cancelled_by = {str(t["cause"]) for t in steps if t["event"] == "cancel"}
    refused = {str(r.get("cause")): r for r in ((w.get("context") or {}).get("refused_cancellations") or [])}
    for event_id in wish.cancels:
        cause = f"crm:{event_id}"
        if cause in cancelled_by:
            continue
        if cause in refused:
            if refused[cause].get("state") not in ("activated", "completed"):
                report.add(
                    OUTCOME, subject, f"cancellation {event_id} refused in {refused[cause].get('state')!r}"
                )
            continue
        if cancelled_by:
            continue  # already compensating for an earlier cancellation: a second one changes nothing
        report.add(
            OUTCOME, subject, f"cancellation {event_id} was accepted and neither carried out nor refused"
        )


def _check_end(
    wish: Asked,
    w: Mapping[str, Any],
    steps: list[dict[str, Any]],
    plan: Mapping[str, Any] | None,
    report: Report,
    subject: str,
) -> None:
    events = _events(steps)
    code = (w.get("error") or {}).get("code")
    if "cancel" in events:
        expected, want_code = "cancelled", None
    elif plan is not None and plan.get("outcome") == "FAILED" and "keep_temporary_number" not in events:
        expected, want_code = "failed", "port_failed"
    elif wish.line_item_type in ONE_OFF_TYPES:
        expected, want_code = "completed", None
    else:
        expected, want_code = "activated", None
    if w["state"] != expected or code != want_code:
        got = f"{w['state']}" + (f" ({code})" if code else "")
        want = expected + (f" ({want_code})" if want_code else "")
        report.add(OUTCOME, subject, f"ended {got}; the CRM's events and the sandbox's plans say {want}")


def _check_amendments(
    wish: Asked,
    w: Mapping[str, Any],
    item_answers: list[dict[str, Any]],
    replays: int,
    world: _World,
    report: Report,
    subject: str,
) -> None:
    """Exactly one answer per amendment; what an applied one changed is what the item holds. An
    operator's replay of a rejected port requests it again with the details held, and says so
    with an answer of its own: at most one more per replay."""
    if not len(wish.updates) <= len(item_answers) <= len(wish.updates) + replays:
        report.add(
            OUTCOME,
            subject,
            f"{len(wish.updates)} amendments accepted, {len(item_answers)} answered (amended events)"
            + (f", {replays} operator replays" if replays else ""),
        )
        return
    holds = wish.submitted
    for update, answer in zip(wish.updates, item_answers, strict=False):
        if answer.get("outcome") == "applied" and answer.get("change") != "keep_temporary_number":
            holds = update
    spec = w.get("spec") or {}
    if spec.get("productOfferingId") != holds.get("productOfferingId"):
        report.add(
            OUTCOME,
            subject,
            f"holds offering {spec.get('productOfferingId')!r}; the last applied amendment asked "
            f"{holds.get('productOfferingId')!r}",
        )
    subscription_id = (w.get("context") or {}).get("subscription_id")
    port = world.ports.get(str(subscription_id))
    porting = holds.get("porting")
    if (
        port is not None
        and porting
        and w["state"] != "cancelled"
        and port.get("detailsDigest") != details_digest(porting["details"])
    ):
        report.add(OUTCOME, subject, "the provider's port holds other porting details than the last applied")


def _check_provider(
    wish: Asked,
    w: Mapping[str, Any],
    provider_order: str | None,
    world: _World,
    report: Report,
    subject: str,
) -> None:
    state = w["state"]
    spec = w.get("spec") or {}
    item = wish.line_item_id
    fulfilled = provider_order is not None and (provider_order, item) in world.fulfilled
    if state in ("activated", "completed") and not fulfilled:
        report.add(PROVIDER, subject, f"{state}, yet its provider order {provider_order} never fulfilled it")
        return
    if state == "cancelled":
        _check_nothing_live(w, provider_order, world, report, subject)
        return
    if wish.line_item_type == "SUBSCRIPTION" and state in ("activated", "failed"):
        _check_subscription(w, provider_order, world, report, subject)
        return
    if state != "activated":
        return
    kind = wish.line_item_type
    if kind == "LICENSE":
        created = (world.orders.get(str(provider_order)) or {}).get("createdEntities", {}).get("licenses", [])
        if not any(lic.get("createdByLineItem") == item for lic in created):
            report.add(PROVIDER, subject, "activated, yet its provider order created no license for it")
    elif kind == "ADD_ON":
        if not any(
            a["subscriptionId"] == spec.get("subscriptionId")
            and a["productOfferingId"] == spec.get("productOfferingId")
            and a["status"] == "ACTIVE"
            for a in world.addons
        ):
            report.add(
                PROVIDER,
                subject,
                f"activated, yet {spec.get('subscriptionId')} has no active add-on as asked",
            )
    elif kind.endswith("_CHANGE"):
        effect, entity = {
            "SUBSCRIPTION_CHANGE": ("subscription.offering_changed", spec.get("subscriptionId")),
            "LICENSE_CHANGE": ("license.offering_changed", spec.get("licenseId")),
            "ADD_ON_CHANGE": ("addon.offering_changed", spec.get("subscriptionAddonId")),
        }[kind]
        if spec.get("productOfferingId") not in world.changed.get((effect, str(entity)), set()):
            report.add(
                PROVIDER,
                subject,
                f"activated, yet {entity} was never changed to {spec.get('productOfferingId')}",
            )


def _check_subscription(
    w: Mapping[str, Any], provider_order: str | None, world: _World, report: Report, subject: str
) -> None:
    """An activated subscription, or one whose port was rejected, as the provider holds it."""
    context = w.get("context") or {}
    spec = w.get("spec") or {}
    sub_id = context.get("subscription_id")
    created = world.created.get((str(provider_order), w["line_item_id"]), [])
    if created != [sub_id]:
        report.add(
            PROVIDER, subject, f"the database names subscription {sub_id}; the provider created {created}"
        )
        return
    sub = world.subscriptions.get(str(sub_id)) or {}
    msisdn = context.get("msisdn")
    kept_temporary = (
        context.get("temporary_msisdn") is None and spec.get("porting") and msisdn != spec.get("msisdn")
    )
    if w["state"] == "activated":
        if sub.get("status") != "ACTIVATED" or sub.get("msisdn") != msisdn:
            report.add(
                PROVIDER,
                subject,
                f"activated on {msisdn}; the provider has it {sub.get('status')} on {sub.get('msisdn')}",
            )
        if spec.get("msisdn") and msisdn != spec["msisdn"] and not kept_temporary:
            report.add(PROVIDER, subject, f"activated on {msisdn}; the CRM chose {spec['msisdn']}")
        if sub.get("productOfferingId") != spec.get("productOfferingId"):
            report.add(
                PROVIDER,
                subject,
                f"the provider's offering is {sub.get('productOfferingId')!r}, "
                f"the item's {spec.get('productOfferingId')!r}",
            )
        return
    port = world.ports.get(str(sub_id)) or {}
    if port.get("status") != "FAILED":
        report.add(
            PROVIDER, subject, f"failed as a rejected port; the provider's port is {port.get('status')}"
        )
    temporary = context.get("temporary_msisdn")
    if temporary and (sub.get("status") != "ACTIVATED" or sub.get("msisdn") != temporary):
        report.add(PROVIDER, subject, f"the customer should be live on {temporary}; the provider has {sub}")


def _check_nothing_live(
    w: Mapping[str, Any], provider_order: str | None, world: _World, report: Report, subject: str
) -> None:
    for sub_id in world.created.get((str(provider_order), w["line_item_id"]), []):
        sub = world.subscriptions.get(sub_id) or {}
        pending = (sub.get("pendingStatus") or {}).get("status")
        if sub.get("status") != "CANCELLED" and pending != "CANCELLED":
            report.add(
                PROVIDER,
                subject,
                f"cancelled, yet subscription {sub_id} is {sub.get('status')} at the provider",
            )
    order = world.orders.get(str(provider_order))
    made = (order or {}).get("createdEntities", {})
    for lic in made.get("licenses", []):
        if lic.get("createdByLineItem") == w["line_item_id"]:
            status = (world.licenses.get(lic["licenseId"]) or {}).get("status")
            if status != "CANCELLED":
                report.add(PROVIDER, subject, f"cancelled, yet license {lic['licenseId']} is {status}")
    if order is not None and order["state"] in CART_STATES and w["line_item_id"] in order["lineItemIds"]:
        report.add(PROVIDER, subject, f"cancelled, yet still in the provider's cart {provider_order}")


def _check_strays(
    workflows: Mapping[ItemKey, Mapping[str, Any]],
    provider_orders: Mapping[str, str | None],
    world: _World,
    report: Report,
) -> None:
    """Every subscription created in one of our provider orders belongs to a line item we know."""
    ours = {poid: crm for crm, poid in provider_orders.items() if poid}
    for (poid, line_item), subs in world.created.items():
        crm = ours.get(poid)
        if crm is not None and (crm, line_item) not in workflows:
            report.add(
                PROVIDER, f"{crm}/{line_item}", f"the provider created {subs} for a line item we do not know"
            )
