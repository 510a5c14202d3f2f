"""Admin API contract: auth, input validation with clear 4xx answers, health, readiness, metrics,
and a replay through HTTP that refuses a plan that changed since it was reviewed."""

from __future__ import annotations

import uuid

import asyncpg
import httpx
import pytest

from orchestrator.admin import AdminConfigError, create_admin_app
from orchestrator.sandbox import SandboxControl
from orchestrator.settings import Settings
from orchestrator.worker import Worker
from tests.admin.conftest import Admin
from tests.e2e.support import StatusEvents, crm_event, order_submitted, porting, publish, subscription

# Porting credentials no other text in a story could contain by chance.
ACCOUNT = "ACC-SENTINEL-7Q3X9"
PASSCODE = "PASS-SENTINEL-4K2M"


def test_refuses_to_start_without_a_token(settings: Settings) -> None:
    with pytest.raises(AdminConfigError, match="ORCHESTRATOR_ADMIN__TOKEN"):
        create_admin_app(settings=settings, token=None)
    with pytest.raises(AdminConfigError):
        create_admin_app(settings=settings, token="   ")


async def test_no_token_or_a_wrong_one_is_401(admin: Admin) -> None:
    for path in ("/api/v1/workflows", f"/api/v1/workflows/{uuid.uuid4()}", "/metrics"):
        answer = await admin.anonymous.get(path)
        assert answer.status_code == 401, path
        assert answer.json()["error"]["code"] == "unauthorized"
        assert answer.headers["www-authenticate"] == "Bearer"
        wrong = await admin.anonymous.get(path, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
    posted = await admin.anonymous.post("/api/v1/replay", json={"error_code": "x", "reason": "because"})
    assert posted.status_code == 401
    assert (await admin.anonymous.get("/healthz")).json() == {"status": "ok"}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("state=bogus", "state"),
        ("type=PHONE", "type"),
        ("older_than=3x", "older_than"),
        ("stuck_longer_than=soon", "stuck_longer_than"),
        ("limit=0", "limit"),
        ("limit=many", "limit"),
    ],
)
async def test_bad_filters_are_422_with_the_reason(admin: Admin, query: str, field: str) -> None:
    answer = await admin.http.get(f"/api/v1/workflows?{query}")
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["code"] in ("invalid_input", "invalid_request")
    assert field in error["message"]


async def test_replay_without_a_reason_is_refused(admin: Admin) -> None:
    missing = await admin.http.post("/api/v1/replay", json={"error_code": "provider_rejected"})
    assert missing.status_code == 422
    assert "reason" in missing.json()["error"]["message"]
    blank = await admin.http.post("/api/v1/replay", json={"error_code": "provider_rejected", "reason": "   "})
    assert blank.status_code == 422
    assert blank.json()["error"]["code"] == "reason_required"
    planned = await admin.http.post("/api/v1/replay/plan", json={"state": ["activated"], "reason": "why not"})
    assert planned.status_code == 422
    assert "failed workflows only" in planned.json()["error"]["message"]
    everything = await admin.http.post("/api/v1/replay", json={"reason": "all of them"})
    assert everything.status_code == 422
    unknown_field = await admin.http.post("/api/v1/replay", json={"reason": "x y z", "stat": ["failed"]})
    assert unknown_field.status_code == 422


async def test_unknown_ids_are_404_and_malformed_ones_422(admin: Admin) -> None:
    assert (await admin.http.get(f"/api/v1/workflows/{uuid.uuid4()}")).status_code == 404
    assert (await admin.http.get("/api/v1/orders/no-such-order")).status_code == 404
    assert (await admin.http.get("/api/v1/workflows/not-a-uuid")).status_code == 422
    cancel = await admin.http.post(
        f"/api/v1/workflows/{uuid.uuid4()}/cancel", json={"reason": "customer asked"}
    )
    assert cancel.status_code == 404


async def test_openapi_documents_the_operations_and_the_bearer_scheme(admin: Admin) -> None:
    spec = (await admin.anonymous.get("/openapi.json")).json()
    for path in (
        "/api/v1/workflows",
        "/api/v1/replay/plan",
        "/api/v1/replay",
        "/api/v1/workflows/{workflow_id}/cancel",
    ):
        assert path in spec["paths"]
    assert any(s.get("scheme") == "bearer" for s in spec["components"]["securitySchemes"].values())


async def test_readyz_checks_kafka_postgres_and_the_provider(admin: Admin) -> None:
    answer = await admin.anonymous.get("/readyz")
    assert answer.status_code == 200, answer.text
    assert set(answer.json()["checks"]) == {"kafka", "postgres", "provider"}


async def test_console_needs_the_token_then_a_cookie(admin: Admin) -> None:
    answer = await admin.anonymous.get("/console")
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/console/login")
    signed = await admin.anonymous.get("/console?token=wrong")
    assert signed.headers["location"].startswith("/console/login")


async def _carried(settings: Settings, order_id: str) -> tuple[str, list[str]]:
    """What the database holds of an order's credentials: the workflows' secrets (text, empty once
    dropped) and the bodies of its provider calls, which carried them to the provider."""
    conn = await asyncpg.connect(settings.database.url.get_secret_value())
    try:
        kept = await conn.fetchval(
            "SELECT coalesce(string_agg(secrets::text, ' '), '') FROM workflows WHERE order_id = $1", order_id
        )
        bodies = await conn.fetch(
            "SELECT body FROM provider_calls WHERE order_id = $1 AND body IS NOT NULL", order_id
        )
    finally:
        await conn.close()
    return kept, [bytes(b["body"]).decode() for b in bodies]


async def _shown(admin: Admin, order_id: str, *, when: str) -> dict[str, httpx.Response]:
    """Everything the API shows an operator about the order, by what was asked (and `when`)."""
    listed = await admin.http.get("/api/v1/workflows", params={"order_id": order_id})
    shown = {"list": listed, "order": await admin.http.get(f"/api/v1/orders/{order_id}")}
    for w in listed.json()["workflows"]:
        shown[f"workflow {w['workflow_id']}"] = await admin.http.get(f"/api/v1/workflows/{w['workflow_id']}")
    shown["metrics"] = await admin.http.get("/metrics")
    return {f"{what} ({when})": answer for what, answer in shown.items()}


def _leaks(answers: dict[str, httpx.Response]) -> list[str]:
    return [
        f"{what} shows {secret!r}"
        for what, answer in answers.items()
        for secret in (ACCOUNT, PASSCODE)
        if secret in answer.text
    ]


async def test_api_replay_with_a_stale_fingerprint_is_409_and_the_metrics_show_the_story(
    admin: Admin, settings: Settings, worker: Worker, status: StatusEvents, control: SandboxControl
) -> None:
    await control.faults({"match": "POST /orders/*/line-items", "kind": "error", "status": 422})
    item = subscription("li-1", msisdn="+15551237009", porting=porting(account=ACCOUNT, passcode=PASSCODE))
    await publish(settings, "o-api", crm_event("crm.order.submitted", order_submitted("o-api", item)))
    await status.until_settled("o-api", 1)
    await control.faults()
    # The credentials are in the system (the workflow keeps them for the port, the refused call
    # carried them), so a story that showed rows or bodies unredacted would show them.
    kept, bodies = await _carried(settings, "o-api")
    assert ACCOUNT in kept, kept
    assert PASSCODE in kept, kept
    assert any(ACCOUNT in b and PASSCODE in b for b in bodies), bodies
    failed_story = await _shown(admin, "o-api", when="failed")
    assert failed_story["order (failed)"].json()["workflows"][0]["holds_secrets"] is True
    listed = (
        await admin.http.get("/api/v1/workflows", params={"state": "failed", "order_id": "o-api"})
    ).json()
    assert listed["total"] == 1
    body = {"order_id": "o-api", "reason": "provider fixed"}
    planned = await admin.http.post("/api/v1/replay/plan", json=body)
    plan = planned.json()
    assert plan["summary"]["replayable"] == 1
    stale = await admin.http.post("/api/v1/replay", json={**body, "expect_fingerprint": "0000"})
    assert stale.status_code == 409
    assert stale.json()["error"]["code"] == "plan_changed"
    done = await admin.http.post("/api/v1/replay", json={**body, "expect_fingerprint": plan["fingerprint"]})
    assert done.status_code == 200, done.text
    assert done.json()["outcome"]["resumed"] == 1
    replay = {"plan": planned, "stale replay": stale, "replay": done}

    def activated() -> bool:
        return status.states("o-api", "li-1")[-1:] == ["activated"]

    await status.wait_for(activated, timeout_s=60, what="o-api to activate")
    activated_story = await _shown(admin, "o-api", when="activated")
    story = activated_story["order (activated)"].json()
    assert story["audit"][0]["actor"] == "api-test"
    assert "secrets" not in story["workflows"][0]
    assert story["workflows"][0]["holds_secrets"] is False  # dropped once the port is done
    leaks = _leaks(failed_story | replay | activated_story)
    assert not leaks, leaks
    metrics = activated_story["metrics (activated)"].text
    assert 'orchestrator_workflows{state="activated"} 1.0' in metrics
    assert "orchestrator_provider_call_latency_seconds_bucket" in metrics
    assert 'orchestrator_provider_calls{status="rekeyed",step="add_item"} 1.0' in metrics
    assert "orchestrator_outbox_unpublished" in metrics
    assert "orchestrator_timer_lag_seconds" in metrics
