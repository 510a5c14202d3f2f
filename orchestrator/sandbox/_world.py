"""The provider's domain state and behaviour: orders, leases, subscriptions, ports, add-ons, licenses.

Entities are kept as the JSON documents the API serves (camelCase dicts), so a response or an event
snapshot is just a serialisation. Every state change records a ledger effect and, where the
provider documents one, emits a webhook event.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from orchestrator.sandbox._clock import SandboxClock, Timeline, iso
from orchestrator.sandbox._config import SandboxConfig
from orchestrator.sandbox._errors import ApiError, bad_request, detail, invalid_state, not_found
from orchestrator.sandbox._ledger import Ledger
from orchestrator.sandbox._numbers import IdSource
from orchestrator.sandbox._scenario import Scenario

Doc = dict[str, Any]
Emit = Callable[[str, Doc, datetime], None]

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
CART_STATES = frozenset({"PENDING", "CONFIGURED"})
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "SUBSCRIPTION": ("productOfferingId",),
    "LICENSE": ("productOfferingId",),
    "ADD_ON": ("subscriptionId", "productOfferingId"),
    "TOP_UP": ("subscriptionId", "productOfferingId"),
    "EXTERNAL_PRODUCT": (),
    "EXTERNAL_ITEM": (),
    "SUBSCRIPTION_CHANGE": ("subscriptionId", "productOfferingId"),
    "LICENSE_CHANGE": ("licenseId", "productOfferingId"),
    "ADD_ON_CHANGE": ("subscriptionId", "subscriptionAddonId", "productOfferingId"),
}
CANCEL_REASONS = frozenset(
    {
        "BETTER_DEAL_PRICE",
        "NOT_HAPPY_MISSING_FUNCTIONS",
        "NOT_HAPPY_COVERAGE_SLA",
        "NOT_HAPPY_COMPLEX_ADMIN",
        "NOT_HAPPY_SUPPORT_ENGAGEMENT",
        "FRAUD",
        "FRAUD_ATTEMPT",
        "TEST_OR_MARKETING",
        "NO_NEED",
        "WRONG_ORDER",
        "OTHER",
    }
)
SECRET_PORTING_FIELDS = ("accountNumber", "passcode")


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def _parse_date(value: Any, prop: str) -> date:
    try:
        return date.fromisoformat(str(value))
    except ValueError as exc:
        raise bad_request(f"{prop} must be a date YYYY-MM-DD", code="invalid_date", prop=prop) from exc


def _require_obj(body: Any, prop: str = "body") -> Doc:
    if not isinstance(body, dict):
        raise bad_request(f"{prop} must be a JSON object", code="invalid_type", prop=prop)
    return body


def _masked(details: Doc) -> Doc:
    """Porting details as the provider echoes them: credentials never come back."""
    return {k: ("****" if k in SECRET_PORTING_FIELDS and v else v) for k, v in details.items()}


class World:
    def __init__(
        self,
        *,
        config: SandboxConfig,
        clock: SandboxClock,
        timeline: Timeline,
        ledger: Ledger,
        scenario: Callable[[], Scenario],
        emit: Emit,
    ) -> None:
        self.config = config
        self.clock = clock
        self.timeline = timeline
        self.ledger = ledger
        self.scenario = scenario
        self._emit = emit
        self.ids = IdSource(seed=config.seed, number_prefix=config.number_prefix)
        self.orders: dict[str, Doc] = {}
        self.order_items: dict[str, dict[str, Doc]] = {}  # orderId -> lineItemId -> item as sent
        self.leases: dict[str, Doc] = {}
        self.leased_count = 0
        self.subscriptions: dict[str, Doc] = {}
        self.by_reference: dict[str, str] = {}
        self.ports: dict[str, Doc] = {}  # subscriptionId -> porting record (with real details)
        self.addons: dict[str, list[Doc]] = {}
        self.licenses: dict[str, Doc] = {}
        self.late_activations: set[str] = set()  # subscriptions whose date passed (`activationLate`)

    # --- helpers ---------------------------------------------------------------------------------
    def now(self) -> datetime:
        return self.clock.now()

    def emit(self, event_type: str, data: Doc, at: datetime) -> None:
        self._emit(event_type, data, at)

    def _touch(self, doc: Doc, at: datetime) -> None:
        doc["updatedAt"] = iso(at)

    def order(self, order_id: str) -> Doc:
        found = self.orders.get(order_id)
        if found is None:
            raise not_found("order", order_id)
        return found

    def subscription(self, ident: str) -> Doc:
        sub_id = self.by_reference.get(ident[4:]) if ident.startswith("rid_") else ident
        found = self.subscriptions.get(sub_id or "")
        if found is None:
            raise not_found("subscription", ident)
        return found

    def _cart(self, order: Doc) -> None:
        if order["state"] not in CART_STATES:
            raise invalid_state(f"order {order['orderId']} is {order['state']}; only a cart can change")

    # --- orders ----------------------------------------------------------------------------------
    def create_order(self, body: Any) -> Doc:
        body = _require_obj(body)
        customer = body.get("customer")
        if not isinstance(customer, dict):
            raise bad_request("customer is required", code="required", prop="customer")
        items = body.get("lineItems") or []
        if not isinstance(items, list):
            raise bad_request("lineItems must be a list", code="invalid_type", prop="lineItems")
        at = self.now()
        order_id = self.ids.token("ord", 6)
        checked = [self._check_line_item(item, f"lineItems[{i}]", seen=set()) for i, item in enumerate(items)]
        ids = [item["lineItemId"] for item in checked]
        if len(set(ids)) != len(ids):
            raise bad_request(
                "lineItemId must be unique within the order", code="duplicate", prop="lineItems"
            )
        order: Doc = {
            "orderId": order_id,
            "state": "PENDING",
            "customer": customer,
            "user": body.get("user"),
            "billing": body.get("billing"),
            "shipping": body.get("shipping"),
            "promoCode": body.get("promoCode"),
            "metadata": body.get("metadata") or {},
            "lineItems": [],
            "validation": None,
            "requirements": {
                "requiresPayment": "NOT_REQUIRED",
                "requiresPaymentProfile": "NOT_REQUIRED",
                "requiresSigning": "NOT_REQUIRED",
            },
            "createdEntities": {"subscriptions": [], "licenses": []},
            "expiresAt": iso(at + timedelta(seconds=self.config.order_ttl_s)),
            "createdAt": iso(at),
            "updatedAt": iso(at),
            "submittedAt": None,
            "completedAt": None,
        }
        self.orders[order_id] = order
        self.order_items[order_id] = {item["lineItemId"]: item for item in checked}
        self._refresh(order, at)
        self.ledger.effect("order.created", order_id, lineItems=ids)
        for item_id in ids:
            self.ledger.effect("line_item.added", order_id, lineItemId=item_id)
        self.timeline.at(at + timedelta(seconds=self.config.order_ttl_s), lambda t: self._expire(order_id, t))
        return order

    def _check_line_item(self, raw: Any, prop: str, *, seen: set[str]) -> Doc:
        item = _require_obj(raw, prop)
        kind = item.get("type")
        if kind not in REQUIRED_FIELDS:
            raise bad_request(f"unknown line item type {kind!r}", code="invalid_enum", prop=f"{prop}.type")
        item_id = item.get("lineItemId")
        if not isinstance(item_id, str) or not item_id:
            raise bad_request("lineItemId is required", code="required", prop=f"{prop}.lineItemId")
        if item_id in seen:
            raise bad_request(
                f"line item {item_id} already exists", code="duplicate", prop=f"{prop}.lineItemId"
            )
        for name in REQUIRED_FIELDS[kind]:
            if not item.get(name):
                raise bad_request(f"{name} is required for {kind}", code="required", prop=f"{prop}.{name}")
        if "subscriptionId" in item and item.get("subscriptionId"):
            try:
                self.subscription(str(item["subscriptionId"]))
            except ApiError as exc:
                raise bad_request(
                    f"unknown subscription {item['subscriptionId']}", code="unknown_reference", prop=prop
                ) from exc
        if kind == "LICENSE_CHANGE" and item["licenseId"] not in self.licenses:
            raise bad_request(f"unknown license {item['licenseId']}", code="unknown_reference", prop=prop)
        if kind == "SUBSCRIPTION":
            self._check_number_choice(item, prop)
        return item

    def _check_number_choice(self, spec: Doc, prop: str) -> None:
        msisdn, token, porting = spec.get("msisdn"), spec.get("leaseToken"), spec.get("porting")
        if msisdn is not None and (not isinstance(msisdn, str) or not E164.match(msisdn)):
            raise bad_request("msisdn must be E.164", code="invalid_format", prop=f"{prop}.msisdn")
        if spec.get("tempNumber") and not porting:
            raise bad_request(
                "tempNumber needs porting details", code="invalid_combination", prop=f"{prop}.tempNumber"
            )
        if porting is not None:
            if not msisdn:
                raise bad_request("porting needs the msisdn to port", code="required", prop=f"{prop}.msisdn")
            if not isinstance(porting, dict) or not isinstance(porting.get("details"), dict):
                raise bad_request(
                    "porting.details is required", code="required", prop=f"{prop}.porting.details"
                )
        elif msisdn and not token:
            raise bad_request(
                "a pool number needs its leaseToken", code="required", prop=f"{prop}.leaseToken"
            )
        if token is not None:
            self._check_lease(str(token), msisdn, f"{prop}.leaseToken", status=400)
        if spec.get("scheduleActivationAt") is not None:
            _parse_date(spec["scheduleActivationAt"], f"{prop}.scheduleActivationAt")

    def _check_lease(self, token: str, msisdn: Any, prop: str, *, status: int) -> Doc:
        lease = self.leases.get(token)
        code = "validation_error" if status == 400 else "precondition_failed"
        if lease is None or msisdn not in lease["_numbers"]:
            raise ApiError(
                status,
                code,
                "unknown lease or number not in it",
                details=[detail("lease not found for this msisdn", code="lease_invalid", property=prop)],
            )
        if self.now() >= lease["_expires"]:
            raise ApiError(
                status,
                code,
                f"lease {token} expired at {lease['expiresAt']}",
                details=[detail("lease expired", code="lease_expired", property=prop)],
            )
        if msisdn in lease["_used"]:
            raise ApiError(
                status,
                code,
                f"{msisdn} from lease {token} is already used",
                details=[detail("number already used", code="lease_used", property=prop)],
            )
        return lease

    def _echo(self, item: Doc) -> Doc:
        echoed = {k: v for k, v in item.items() if k not in ("porting", "leaseToken")}
        if item.get("type") == "SUBSCRIPTION":
            echoed["portingRequested"] = bool(item.get("porting"))
        return echoed

    def _refresh(self, order: Doc, at: datetime) -> None:
        items = self.order_items[order["orderId"]]
        order["lineItems"] = [self._echo(item) for item in items.values()]
        missing = [] if items else ["lineItems"]
        order["validation"] = {
            "isValid": not missing,
            "missingFields": missing,
            "errors": [],
            "lineItemValidation": [
                {"lineItemId": k, "isValid": True, "missingFields": [], "errors": []} for k in items
            ],
        }
        if order["state"] in CART_STATES:
            order["state"] = "CONFIGURED" if not missing else "PENDING"
        self._touch(order, at)

    def add_line_item(self, order_id: str, item: Any) -> Doc:
        order = self.order(order_id)
        self._cart(order)
        items = self.order_items[order_id]
        checked = self._check_line_item(item, "lineItem", seen=set(items))
        items[checked["lineItemId"]] = checked
        self._refresh(order, self.now())
        self.ledger.effect("line_item.added", order_id, lineItemId=checked["lineItemId"])
        return self._echo(checked)

    def update_line_item(self, order_id: str, item_id: str, body: Any) -> Doc:
        order = self.order(order_id)
        self._cart(order)
        items = self.order_items[order_id]
        if item_id not in items:
            raise not_found("line item", item_id)
        item = _require_obj(_require_obj(body).get("lineItem"), "lineItem")
        item = {**item, "lineItemId": item.get("lineItemId", item_id)}
        if item["lineItemId"] != item_id:
            raise bad_request("lineItemId cannot change", code="immutable", prop="lineItem.lineItemId")
        checked = self._check_line_item(item, "lineItem", seen=set())
        items[item_id] = checked
        self._refresh(order, self.now())
        self.ledger.effect("line_item.updated", order_id, lineItemId=item_id)
        return self._echo(checked)

    def remove_line_item(self, order_id: str, item_id: str) -> None:
        order = self.order(order_id)
        self._cart(order)
        if self.order_items[order_id].pop(item_id, None) is None:
            raise not_found("line item", item_id)
        self._refresh(order, self.now())
        self.ledger.effect("line_item.removed", order_id, lineItemId=item_id)

    def calculate_price(self, order_id: str) -> Doc:
        order = self.order(order_id)
        if not order["validation"]["isValid"]:
            raise ApiError(
                412,
                "order_invalid",
                "invalid orders cannot be priced",
                details=[detail("order has no line items", code="required", property="lineItems")],
            )
        lines = [
            {"lineItemId": k, "subtotal": 100, "total": 100, "taxAmount": 0, "taxIncluded": True}
            for k in self.order_items[order_id]
        ]
        total = 100 * len(lines)
        return {
            "pricing": {
                "subtotal": total,
                "taxAmount": 0,
                "fees": 0,
                "total": total,
                "taxIncluded": True,
                "currency": "SEK",
                "calculatedAt": iso(self.now()),
                "lineItems": lines,
            }
        }

    def submit_order(self, order_id: str, body: Any) -> Doc:
        _require_obj(body)
        order = self.order(order_id)
        if order["state"] not in CART_STATES:
            raise invalid_state(
                f"order {order_id} is {order['state']}; only PENDING/CONFIGURED can be submitted"
            )
        if not order["validation"]["isValid"]:
            raise ApiError(
                412,
                "order_invalid",
                "order is not valid",
                details=[
                    detail(f"{f} is missing", code="required", property=f)
                    for f in order["validation"]["missingFields"]
                ],
            )
        items = self.order_items[order_id]
        leased = [(k, i) for k, i in items.items() if i.get("type") == "SUBSCRIPTION" and i.get("leaseToken")]
        for item_id, item in leased:
            self._check_lease(
                str(item["leaseToken"]), item.get("msisdn"), f"lineItems[{item_id}].leaseToken", status=412
            )
        at = self.now()
        for _, item in leased:
            self.leases[str(item["leaseToken"])]["_used"].add(item["msisdn"])
            self.ledger.effect("lease.used", str(item["leaseToken"]), msisdn=item["msisdn"], orderId=order_id)
        order["state"] = "SUBMITTED"
        order["submittedAt"] = iso(at)
        if isinstance(body.get("externalPayment"), dict):
            order["externalPayment"] = {**body["externalPayment"], "receivedAt": iso(at)}
        self._touch(order, at)
        self.ledger.effect("order.submitted", order_id)
        self.emit("order.submitted", order, at)
        self.timeline.after(self.config.order_step_s, lambda t: self._process(order_id, t), base=at)
        return order

    def cancel_order(self, order_id: str, body: Any) -> Doc:
        _require_obj(body)
        order = self.order(order_id)
        if order["state"] not in (*CART_STATES, "SUBMITTED"):
            raise invalid_state(f"order {order_id} is {order['state']}; it can no longer be cancelled")
        at = self.now()
        order["state"] = "CANCELLED"
        order["cancelledAt"] = iso(at)
        self._touch(order, at)
        self.ledger.effect("order.cancelled", order_id)
        self.emit("order.updated", order, at)
        return order

    def _expire(self, order_id: str, at: datetime) -> None:
        order = self.orders.get(order_id)
        if order is not None and order["state"] in CART_STATES:
            order["state"] = "EXPIRED"
            self._touch(order, at)
            self.ledger.effect("order.expired", order_id, at=at)
            self.emit("order.updated", order, at)

    def _process(self, order_id: str, at: datetime) -> None:
        order = self.orders.get(order_id)
        if order is None or order["state"] != "SUBMITTED":
            return  # cancelled meanwhile
        order["state"] = "PROCESSING"
        self._touch(order, at)
        self.ledger.effect("order.processing", order_id, at=at)
        self.emit("order.updated", order, at)
        self.timeline.after(self.config.order_step_s, lambda t: self._complete(order_id, t), base=at)

    def _complete(self, order_id: str, at: datetime) -> None:
        order = self.orders[order_id]
        if order["state"] != "PROCESSING":
            return
        for item in self.order_items[order_id].values():
            self._fulfil(order, item, at)
        order["state"] = "COMPLETED"
        order["completedAt"] = iso(at)
        self._touch(order, at)
        self.ledger.effect("order.completed", order_id, at=at)
        self.emit("order.updated", order, at)

    def _fulfil(self, order: Doc, item: Doc, at: datetime) -> None:
        kind, item_id, order_id = item["type"], item["lineItemId"], order["orderId"]
        created = order["createdEntities"]
        if kind == "SUBSCRIPTION":
            sub = self._new_subscription(
                {**item, "customerId": order["customer"].get("customerId")}, at, order_id=order_id
            )
            self._provision(sub, item, at)
            created["subscriptions"].append(
                {
                    k: sub.get(k)
                    for k in (
                        "subscriptionId",
                        "status",
                        "type",
                        "display",
                        "msisdn",
                        "customerId",
                        "productOfferingId",
                        "activatedAt",
                        "createdAt",
                        "updatedAt",
                    )
                }
                | {"createdByLineItem": item_id}
            )
        elif kind == "LICENSE":
            lic = self._new_license(item, at)
            created["licenses"].append(
                {"licenseId": lic["licenseId"], "type": lic["type"], "createdByLineItem": item_id}
            )
        elif kind == "ADD_ON":
            sub = self.subscription(str(item["subscriptionId"]))
            self._new_addon(sub, item, at)
        elif kind == "TOP_UP":
            self.ledger.effect(
                "topup.applied",
                self.subscription(str(item["subscriptionId"]))["subscriptionId"],
                at=at,
                productOfferingId=item["productOfferingId"],
                lineItemId=item_id,
                orderId=order_id,
            )
        elif kind == "SUBSCRIPTION_CHANGE":
            sub = self.subscription(str(item["subscriptionId"]))
            sub["productOfferingId"] = item["productOfferingId"]
            self._touch(sub, at)
            self.ledger.effect(
                "subscription.offering_changed",
                sub["subscriptionId"],
                at=at,
                productOfferingId=item["productOfferingId"],
            )
            self.emit("subscription.updated", sub, at)
        elif kind == "LICENSE_CHANGE":
            self.licenses[item["licenseId"]]["productOfferingId"] = item["productOfferingId"]
            self.ledger.effect(
                "license.offering_changed",
                item["licenseId"],
                at=at,
                productOfferingId=item["productOfferingId"],
            )
        elif kind == "ADD_ON_CHANGE":
            sub = self.subscription(str(item["subscriptionId"]))
            for addon in self.addons.get(sub["subscriptionId"], []):
                if addon["subscriptionAddonId"] == item["subscriptionAddonId"]:
                    addon.update(productOfferingId=item["productOfferingId"], updatedAt=iso(at))
            self.ledger.effect(
                "addon.offering_changed",
                str(item["subscriptionAddonId"]),
                at=at,
                productOfferingId=item["productOfferingId"],
            )
        self.ledger.effect("line_item.fulfilled", order_id, at=at, lineItemId=item_id, type=kind)

    # --- inventory -------------------------------------------------------------------------------
    def lease_numbers(self, body: Any) -> Doc:
        body = _require_obj(body)
        types, count = body.get("types"), body.get("count")
        if not isinstance(types, list) or not types or not all(isinstance(t, str) for t in types):
            raise bad_request('types is required, e.g. ["CELL"]', code="required", prop="types")
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 10:
            raise bad_request("count must be 1..10", code="out_of_range", prop="count")
        scenario = self.scenario()
        capped = scenario.pool_size is not None and self.leased_count + count > scenario.pool_size
        if not scenario.lease_available or capped:
            raise ApiError(409, "numbers_unavailable", "no numbers available for lease")
        at = self.now()
        expires = at + timedelta(seconds=self.config.lease_ttl_s)
        token = self.ids.token("lease", 8)
        numbers = [self.ids.msisdn() for _ in range(count)]
        self.leased_count += count
        lease: Doc = {
            "leaseToken": token,
            "expiresAt": iso(expires),
            "numbers": [
                {
                    "msisdn": n,
                    "type": types[0],
                    "grade": 5,
                    "leasedAt": iso(at),
                    "expiresAt": iso(expires),
                    "metadata": {},
                }
                for n in numbers
            ],
        }
        self.leases[token] = {**lease, "_numbers": set(numbers), "_used": set(), "_expires": expires}
        self.ledger.effect("number.leased", token, msisdns=numbers)
        self.timeline.at(expires, lambda t: self._lease_lapsed(token, t))
        return lease

    def _lease_lapsed(self, token: str, at: datetime) -> None:
        lease = self.leases[token]
        unused = sorted(lease["_numbers"] - lease["_used"])
        for number in unused:
            self.ids.release(number)
        self.ledger.effect("lease.expired", token, at=at, released=unused)

    # --- subscriptions ---------------------------------------------------------------------------
    def _new_subscription(self, spec: Doc, at: datetime, *, order_id: str | None = None) -> Doc:
        sub_id = self.ids.uuid()
        reference = spec.get("referenceId")
        sub: Doc = {
            "subscriptionId": sub_id,
            "status": "PENDING",
            "type": "CELL",
            "display": spec.get("display"),
            "msisdn": None,
            "customerId": spec.get("customerId"),
            "productOfferingId": spec.get("productOfferingId"),
            "referenceId": reference,
            "subscriber": spec.get("subscriber"),
            "sim": spec.get("sim") or {"esim": True, "imei": None, "iccid": None},
            "pendingMsisdn": None,
            "pendingStatus": None,
            "porting": None,
            "extensions": spec.get("extensions") or {},
            "activatedAt": None,
            "cancelledAt": None,
            "createdAt": iso(at),
            "updatedAt": iso(at),
            "metadata": spec.get("metadata") or {},
        }
        self.subscriptions[sub_id] = sub
        if reference:
            self.by_reference[str(reference)] = sub_id
        self.ledger.effect(
            "subscription.created", sub_id, at=at, orderId=order_id, lineItemId=spec.get("lineItemId")
        )
        self.emit("subscription.created", sub, at)
        return sub

    def _provision(self, sub: Doc, spec: Doc, at: datetime) -> None:
        """Give `sub` its number(s) and activate it now, on its date, or when its port completes."""
        sub_id = sub["subscriptionId"]
        if spec.get("sim"):
            sub["sim"] = spec["sim"]
        if spec.get("porting"):
            self._start_port(sub, spec, at)
            return
        if spec.get("leaseToken"):
            number = str(spec["msisdn"])
            self.leases[str(spec["leaseToken"])]["_used"].add(number)
        else:
            number = self.ids.msisdn()
        sub["msisdn"] = number
        sub["display"] = sub.get("display") or number
        self.ledger.effect("number.assigned", sub_id, at=at, msisdn=number)
        self._activate_on(sub, spec.get("scheduleActivationAt"), at)

    def _activate_on(self, sub: Doc, day: Any, at: datetime) -> None:
        when = _day_start(_parse_date(day, "scheduleActivationAt")) if day else at
        if when <= at and not (day and self.scenario().activation_late):
            self._activate(sub["subscriptionId"], at)
            return
        sub["pendingStatus"] = {"status": "ACTIVATED", "scheduledAt": str(day)}
        self._touch(sub, at)
        self.ledger.effect("activation.scheduled", sub["subscriptionId"], at=at, date=str(day))
        self.emit("subscription.updated", sub, at)
        sub_id = sub["subscriptionId"]
        self.timeline.at(max(when, at), lambda t: self._activate_when_due(sub_id, t))

    def _activate_when_due(self, sub_id: str, at: datetime) -> None:
        """A scheduled activation's date has begun. With the scenario's `activationLate`, the
        provider misses it: it looks again a sandbox second after the clock's now (not after `at`,
        so a long advance does not spin), until the switch is off."""
        if self.scenario().activation_late:
            if sub_id not in self.late_activations:
                self.late_activations.add(sub_id)
                self.ledger.effect("activation.late", sub_id, at=at)
            self.timeline.after(1.0, lambda t: self._activate_when_due(sub_id, t))
            return
        self._activate(sub_id, at)

    def _activate(self, sub_id: str, at: datetime) -> None:
        sub = self.subscriptions[sub_id]
        if sub["status"] != "PENDING":
            return
        sub["status"] = "ACTIVATED"
        sub["activatedAt"] = iso(at)
        if sub["pendingStatus"] and sub["pendingStatus"]["status"] == "ACTIVATED":
            sub["pendingStatus"] = None
        self._touch(sub, at)
        self.ledger.effect("subscription.activated", sub_id, at=at, msisdn=sub["msisdn"])
        self.emit("subscription.updated", sub, at)

    def create_subscription(self, body: Any) -> Doc:
        body = _require_obj(body)
        if not self.scenario().create_subscription_enabled:
            raise ApiError(403, "operation_disabled", "create subscription is disabled: use an order")
        for name in ("productOfferingId", "customerId"):
            if not body.get(name):
                raise bad_request(f"{name} is required", code="required", prop=name)
        reference = body.get("referenceId")
        if reference is not None and (not isinstance(reference, str) or len(reference) > 255):
            raise bad_request("referenceId must be a string of at most 255 characters", prop="referenceId")
        if reference in self.by_reference:
            raise ApiError(409, "reference_id_taken", f"referenceId {reference} is in use")
        return self._new_subscription(body, self.now())

    def list_subscriptions(self, *, limit: int, offset: int) -> Doc:
        subs = list(self.subscriptions.values())
        return {
            "items": subs[offset : offset + limit],
            "pagination": {"total": len(subs), "limit": limit, "offset": offset},
        }

    def activate_subscription(self, ident: str, body: Any) -> Doc:
        body = _require_obj(body)
        sub = self.subscription(ident)
        if sub["status"] != "PENDING" or sub["pendingStatus"] or sub["subscriptionId"] in self.ports:
            raise invalid_state(f"subscription {ident} is not a pending shell (status {sub['status']})")
        self._check_number_choice(body, "body")
        at = self.now()
        self.ledger.effect("subscription.activation_requested", sub["subscriptionId"])
        self._provision(sub, body, at)
        return sub

    def cancel_subscription(self, ident: str, body: Any) -> Doc:
        body = _require_obj(body)
        sub = self.subscription(ident)
        if sub["status"] == "CANCELLED" or (sub["pendingStatus"] or {}).get("status") == "CANCELLED":
            raise invalid_state(f"subscription {ident} is already cancelled or being cancelled")
        reason = body.get("reason")
        if reason not in CANCEL_REASONS:
            raise bad_request("reason is not a known cancellation reason", code="invalid_enum", prop="reason")
        if reason == "OTHER" and not body.get("comment"):
            raise bad_request("comment is required when reason is OTHER", code="required", prop="comment")
        at = self.now()
        when = body.get("when")
        if when == "CancelNextDay":
            day = at.date() + timedelta(days=1)
        elif when == "CancelAtBeginningOfNextMonth":
            day = (at.date().replace(day=28) + timedelta(days=4)).replace(day=1)
        elif when == "CancelAtDate":
            day = _parse_date(body.get("date"), "date")
            if day < at.date():
                raise bad_request("date is in the past", code="out_of_range", prop="date")
        else:
            raise bad_request(
                "when must be CancelNextDay, CancelAtBeginningOfNextMonth or CancelAtDate",
                code="invalid_enum",
                prop="when",
            )
        sub["pendingStatus"] = {"status": "CANCELLED", "scheduledAt": day.isoformat()}
        self._touch(sub, at)
        sub_id = sub["subscriptionId"]
        self.ledger.effect("subscription.cancel_scheduled", sub_id, date=day.isoformat(), reason=reason)
        self.emit("subscription.updated", sub, at)
        self.timeline.at(max(_day_start(day), at), lambda t: self._cancelled(sub_id, t))
        return sub

    def _cancelled(self, sub_id: str, at: datetime) -> None:
        sub = self.subscriptions[sub_id]
        sub["status"] = "CANCELLED"
        sub["cancelledAt"] = iso(at)
        sub["pendingStatus"] = None
        sub["pendingMsisdn"] = None
        self._touch(sub, at)
        self.ledger.effect("subscription.cancelled", sub_id, at=at)
        self.emit("subscription.cancelled", sub, at)

    # --- porting ---------------------------------------------------------------------------------
    def _port_view(self, port: Doc) -> Doc:
        return {**{k: v for k, v in port.items() if k != "details"}, "details": _masked(port["details"])}

    def _start_port(self, sub: Doc, spec: Doc, at: datetime) -> None:
        sub_id, ported = sub["subscriptionId"], str(spec["msisdn"])
        port: Doc = {
            "msisdn": ported,
            "status": "PENDING",
            "direction": "INBOUND",
            "details": dict(spec["porting"]["details"]),
            "scheduledAt": None,
            "tempNumber": bool(spec.get("tempNumber")),
            "activationDate": spec.get("scheduleActivationAt"),
            "createdAt": iso(at),
            "updatedAt": iso(at),
        }
        self.ports[sub_id] = port
        sub["porting"] = {"status": "PENDING", "msisdn": ported, "scheduledAt": None}
        sub["pendingMsisdn"] = {"msisdn": ported, "scheduledAt": None}
        self.ledger.effect("port.created", sub_id, at=at, msisdn=ported)
        self.emit("subscription.portIn.created", {**sub, "portIn": self._port_view(port)}, at)
        if port["tempNumber"]:
            temp = self.ids.msisdn()
            sub["msisdn"] = temp
            sub["display"] = sub.get("display") or temp
            self.ledger.effect("temp_number.assigned", sub_id, at=at, msisdn=temp, portedMsisdn=ported)
            self._activate(sub_id, at)
        self.timeline.after(self.config.port_step_s, lambda t: self._port_step(sub_id, t), base=at)

    def _set_port_status(self, sub: Doc, port: Doc, status: str, at: datetime) -> None:
        port["status"] = status
        port["updatedAt"] = iso(at)
        sub["porting"] = {"status": status, "msisdn": port["msisdn"], "scheduledAt": port["scheduledAt"]}
        self._touch(sub, at)

    def _port_step(self, sub_id: str, at: datetime) -> None:
        port, sub = self.ports.get(sub_id), self.subscriptions[sub_id]
        if port is None or port["status"] in ("COMPLETED", "FAILED") or sub["status"] == "CANCELLED":
            return
        plan = self.scenario().port_plan(port["msisdn"])
        if port["status"] == "PENDING":
            self._set_port_status(sub, port, "IN_PROGRESS", at)
            self.ledger.effect("port.in_progress", sub_id, at=at)
            self.emit("subscription.portIn.updated", sub, at)
            self.timeline.after(self.config.port_step_s, lambda t: self._port_step(sub_id, t), base=at)
        elif plan.outcome == "STUCK":
            self.timeline.after(
                max(self.config.port_step_s, 1.0), lambda t: self._port_step(sub_id, t), base=at
            )
        elif plan.outcome == "FAILED":
            self._port_failed(sub, port, at)
        elif port["status"] == "IN_PROGRESS":
            delay = plan.delay_s if plan.delay_s is not None else self.config.port_delay_s
            when = at + timedelta(seconds=delay)
            port["scheduledAt"] = iso(when)
            self._set_port_status(sub, port, "SCHEDULED", at)
            sub["pendingMsisdn"] = {"msisdn": port["msisdn"], "scheduledAt": iso(when)}
            self.ledger.effect("port.scheduled", sub_id, at=at, scheduledAt=iso(when))
            self.emit("subscription.portIn.updated", sub, at)
            self.timeline.at(when, lambda t: self._port_step(sub_id, t))
        else:
            self._port_completed(sub, port, at)

    def _port_failed(self, sub: Doc, port: Doc, at: datetime) -> None:
        self._set_port_status(sub, port, "FAILED", at)
        sub["pendingMsisdn"] = None
        self.ledger.effect("port.failed", sub["subscriptionId"], at=at, msisdn=port["msisdn"])
        self.emit("subscription.portIn.failed", sub, at)

    def _port_completed(self, sub: Doc, port: Doc, at: datetime) -> None:
        sub_id, ported, previous = sub["subscriptionId"], port["msisdn"], sub["msisdn"]
        self._set_port_status(sub, port, "COMPLETED", at)
        sub["msisdn"] = ported
        sub["pendingMsisdn"] = None
        if sub.get("display") in (None, previous):
            sub["display"] = ported
        self.ledger.effect("port.completed", sub_id, at=at, msisdn=ported)
        if previous:
            self.ids.release(previous)
            self.ledger.effect("msisdn.swapped", sub_id, at=at, fromMsisdn=previous, toMsisdn=ported)
        self.emit("subscription.portIn.completed", sub, at)
        self.emit("subscription.updated", sub, at)
        if sub["status"] == "PENDING":
            self._activate_on(sub, port.get("activationDate"), at)

    def get_in_porting(self, ident: str) -> Doc:
        sub = self.subscription(ident)
        port = self.ports.get(sub["subscriptionId"])
        if port is None:
            raise ApiError(404, "not_found", f"subscription {ident} has no port-in")
        return self._port_view(port)

    def update_in_porting(self, ident: str, body: Any) -> Doc:
        body = _require_obj(body)
        sub = self.subscription(ident)
        port = self.ports.get(sub["subscriptionId"])
        if port is None:
            raise ApiError(404, "not_found", f"subscription {ident} has no port-in")
        if port["status"] not in ("PENDING", "IN_PROGRESS", "FAILED"):
            raise invalid_state(
                f"port-in is {port['status']}; details can change only while PENDING/IN_PROGRESS"
            )
        details = body.get("details")
        if not isinstance(details, dict) or not details:
            raise bad_request("details is required", code="required", prop="details")
        at = self.now()
        port["details"] = {**port["details"], **details}
        port["updatedAt"] = iso(at)
        self._touch(sub, at)
        sub_id = sub["subscriptionId"]
        if port["status"] == "FAILED":
            # Inferred (connect-api.md: "a new attempt is needed"): corrected details on a
            # rejected port request it again, on the same subscription.
            port["scheduledAt"] = None
            self._set_port_status(sub, port, "PENDING", at)
            sub["pendingMsisdn"] = {"msisdn": port["msisdn"], "scheduledAt": None}
            self.ledger.effect("port.requested_again", sub_id, at=at, msisdn=port["msisdn"])
            self.emit("subscription.portIn.created", {**sub, "portIn": self._port_view(port)}, at)
            self.timeline.after(self.config.port_step_s, lambda t: self._port_step(sub_id, t), base=at)
            return {"subscription": sub}
        self.ledger.effect("port.details_updated", sub_id, fields=sorted(details))
        self.emit("subscription.portIn.updated", sub, at)
        return {"subscription": sub}

    # --- add-ons, top-ups, licenses --------------------------------------------------------------
    def _new_addon(self, sub: Doc, spec: Doc, at: datetime) -> Doc:
        day = spec.get("scheduledAt")
        start = _day_start(_parse_date(day, "scheduledAt")) if day else at
        addon: Doc = {
            "subscriptionAddonId": self.ids.uuid(),
            "subscriptionId": sub["subscriptionId"],
            "status": "ACTIVE" if start <= at else "PENDING",
            "productOfferingId": spec["productOfferingId"],
            "pendingStatus": None if start <= at else {"status": "ACTIVE", "scheduledAt": str(day)},
            "addedAt": iso(at),
            "updatedAt": iso(at),
            "cancelledAt": None,
            "metadata": spec.get("metadata") or {},
        }
        self.addons.setdefault(sub["subscriptionId"], []).append(addon)
        self.ledger.effect(
            "addon.added",
            addon["subscriptionAddonId"],
            at=at,
            subscriptionId=sub["subscriptionId"],
            productOfferingId=spec["productOfferingId"],
        )
        if start > at:
            self.timeline.at(start, lambda t: self._addon_active(addon, t))
        return addon

    def _addon_active(self, addon: Doc, at: datetime) -> None:
        if addon["status"] == "PENDING":
            addon.update(status="ACTIVE", pendingStatus=None, updatedAt=iso(at))
            self.ledger.effect("addon.activated", addon["subscriptionAddonId"], at=at)

    def add_addon(self, ident: str, body: Any) -> Doc:
        body = _require_obj(body)
        sub = self.subscription(ident)
        if sub["status"] == "CANCELLED":
            raise invalid_state(f"subscription {ident} is cancelled")
        if not body.get("productOfferingId"):
            raise bad_request("productOfferingId is required", code="required", prop="productOfferingId")
        return self._new_addon(sub, body, self.now())

    def change_addon(self, ident: str, body: Any) -> Doc:
        body = _require_obj(body)
        sub = self.subscription(ident)
        wanted = body.get("subscriptionAddonId")
        addon = next(
            (a for a in self.addons.get(sub["subscriptionId"], []) if a["subscriptionAddonId"] == wanted),
            None,
        )
        if addon is None:
            raise not_found("add-on", str(wanted))
        if not body.get("productOfferingId"):
            raise bad_request("productOfferingId is required", code="required", prop="productOfferingId")
        at = self.now()
        addon.update(productOfferingId=body["productOfferingId"], updatedAt=iso(at))
        self._touch(sub, at)
        self.ledger.effect(
            "addon.offering_changed",
            addon["subscriptionAddonId"],
            productOfferingId=body["productOfferingId"],
        )
        self.emit("subscription.updated", sub, at)
        return sub

    def add_topup(self, ident: str, body: Any) -> Doc:
        body = _require_obj(body)
        sub = self.subscription(ident)
        if sub["status"] != "ACTIVATED":
            raise invalid_state(f"subscription {ident} is {sub['status']}; top-ups need ACTIVATED")
        if not body.get("productOfferingId"):
            raise bad_request("productOfferingId is required", code="required", prop="productOfferingId")
        at = self.now()
        self.ledger.effect(
            "topup.applied", sub["subscriptionId"], productOfferingId=body["productOfferingId"]
        )
        return {
            "topup": {
                "productOfferingId": body["productOfferingId"],
                "appliedAt": iso(at),
                "metadata": body.get("metadata") or {},
            }
        }

    def _new_license(self, spec: Doc, at: datetime) -> Doc:
        lic: Doc = {
            "licenseId": self.ids.uuid(),
            "status": "ACTIVE",
            "type": spec.get("licenseType", "STANDARD"),
            "productOfferingId": spec["productOfferingId"],
            "assignedTo": (
                {"type": "SUBSCRIPTION", "subscriptionId": spec["subscriptionId"]}
                if spec.get("subscriptionId")
                else None
            ),
            "activatedAt": iso(at),
            "cancelledAt": None,
            "metadata": spec.get("metadata") or {},
        }
        self.licenses[lic["licenseId"]] = lic
        self.ledger.effect("license.created", lic["licenseId"], at=at, lineItemId=spec.get("lineItemId"))
        return lic

    def list_licenses(self, *, limit: int, offset: int) -> Doc:
        items = list(self.licenses.values())
        return {
            "items": items[offset : offset + limit],
            "pagination": {
                "total": len(items),
                "limit": limit,
                "offset": offset,
                "sort": {"key": "activatedAt", "direction": "ASC"},
            },
        }

    def change_license(self, license_id: str, body: Any) -> Doc:
        body = _require_obj(body)
        lic = self.licenses.get(license_id)
        if lic is None:
            raise not_found("license", license_id)
        if not body.get("productOfferingId"):
            raise bad_request("productOfferingId is required", code="required", prop="productOfferingId")
        lic["productOfferingId"] = body["productOfferingId"]
        self.ledger.effect(
            "license.offering_changed", license_id, productOfferingId=body["productOfferingId"]
        )
        return lic
