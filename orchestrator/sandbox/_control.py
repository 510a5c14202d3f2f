"""`/_sandbox/...`: the clock, scenario switches, faults, ledger, events, stats and reset."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel
from starlette.responses import Response

from orchestrator.sandbox._api import body_of, ok
from orchestrator.sandbox._clock import iso
from orchestrator.sandbox._errors import ApiError, detail
from orchestrator.sandbox._faults import FaultRule
from orchestrator.sandbox._ledger import mask_key
from orchestrator.sandbox._runtime import Runtime
from orchestrator.sandbox._scenario import PortPlan, ScenarioPatch

_M = TypeVar("_M", bound=BaseModel)


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class ClockChange(_Camel):
    seconds: float | None = Field(None, ge=0, description="move forward by this many seconds")
    to: datetime | None = Field(None, description="move forward to this instant (aware)")
    speed: float | None = Field(None, ge=0, description="new real-time speed; 0 freezes")


class FaultRules(_Camel):
    rules: list[FaultRule]


def _parse(model: type[_M], body: Any) -> _M:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        problems = [
            detail(err["msg"], code=err["type"], property=".".join(str(p) for p in err["loc"]))
            for err in exc.errors()
        ]
        raise ApiError(400, "validation_error", "invalid control request", details=problems) from exc


def details_digest(details: dict[str, Any]) -> str:
    """sha256 of porting details as canonical JSON: comparable, and no secret in the answer."""
    return hashlib.sha256(json.dumps(details, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def control_router(rt: Runtime) -> APIRouter:  # noqa: C901 - one flat closure per route
    router = APIRouter(prefix="/_sandbox")

    @router.get("/health")
    async def health() -> Response:
        return ok({"status": "ok"})

    @router.get("/clock")
    async def clock() -> Response:
        return ok({"now": iso(rt.clock.now()), "speed": rt.clock.speed})

    @router.post("/clock/advance")
    async def advance(request: Request) -> Response:
        change = _parse(ClockChange, await body_of(request))
        if change.seconds:
            rt.advance(change.seconds)
        if change.to is not None:
            rt.advance(max(0.0, (change.to - rt.clock.now()).total_seconds()))
        if change.speed is not None:
            rt.clock.set_speed(change.speed)
            rt.timeline.poke()
        rt.timeline.run_due()
        return ok({"now": iso(rt.clock.now()), "speed": rt.clock.speed})

    @router.get("/scenario")
    async def get_scenario() -> Response:
        return ok(rt.scenario.model_dump(mode="json", by_alias=True))

    @router.post("/scenario")
    async def patch_scenario(request: Request) -> Response:
        rt.scenario = _parse(ScenarioPatch, await body_of(request)).apply(rt.scenario)
        return ok(rt.scenario.model_dump(mode="json", by_alias=True))

    @router.put("/porting/{msisdn}")
    async def set_port_plan(msisdn: str, request: Request) -> Response:
        plan = _parse(PortPlan, await body_of(request))
        rt.scenario = rt.scenario.model_copy(update={"ports": {**rt.scenario.ports, msisdn: plan}})
        return ok(plan.model_dump(mode="json", by_alias=True))

    @router.get("/faults")
    async def get_faults() -> Response:
        return ok({"rules": [r.model_dump(mode="json", by_alias=True) for r in rt.faults.rules]})

    @router.put("/faults")
    async def set_faults(request: Request) -> Response:
        rt.faults.rules = _parse(FaultRules, await body_of(request)).rules
        return ok({"rules": [r.model_dump(mode="json", by_alias=True) for r in rt.faults.rules]})

    @router.delete("/faults")
    async def clear_faults() -> Response:
        rt.faults.rules = []
        return ok({"rules": []})

    @router.get("/ledger")
    async def ledger(request: Request) -> Response:
        q = request.query_params
        entries = list(
            rt.ledger.entries(kind=q.get("kind"), effect=q.get("effect"), after_seq=int(q.get("afterSeq", 0)))
        )
        return ok({"entries": entries})

    @router.get("/events")
    async def events(request: Request) -> Response:
        wanted = request.query_params.get("type")
        return ok({"events": [e for e in rt.webhooks.events if wanted is None or e["type"] == wanted]})

    @router.get("/entities")
    async def entities() -> Response:
        """Everything the provider holds now, for a checker to compare the orchestrator against."""
        world = rt.world
        return ok(
            {
                "orders": [
                    {
                        "orderId": order_id,
                        "state": order["state"],
                        "lineItemIds": sorted(world.order_items.get(order_id, {})),
                        "createdEntities": order["createdEntities"],
                    }
                    for order_id, order in world.orders.items()
                ],
                "subscriptions": list(world.subscriptions.values()),
                "licenses": list(world.licenses.values()),
                "addons": [addon for addons in world.addons.values() for addon in addons],
                # The details themselves are secrets: a digest tells which ones the port holds.
                "ports": [
                    {
                        "subscriptionId": sub_id,
                        "msisdn": port.get("msisdn"),
                        "status": port.get("status"),
                        "detailsDigest": details_digest(port.get("details") or {}),
                    }
                    for sub_id, port in world.ports.items()
                ],
            }
        )

    @router.get("/stats")
    async def stats() -> Response:
        return ok(
            {
                "requests": rt.stats.requests,
                "maxInFlight": {mask_key(k): v for k, v in rt.stats.max_in_flight.items()},
                "idempotencyKeys": len(rt.idempotency),
                "orders": len(rt.world.orders),
                "subscriptions": len(rt.world.subscriptions),
            }
        )

    @router.post("/reset")
    async def reset() -> Response:
        await rt.reset()
        return ok({"now": iso(rt.clock.now())})

    return router
