"""The admin API: the operator actions as JSON under `/api/v1`, behind the bearer token."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from orchestrator.admin._auth import TokenCheck, Unauthorized
from orchestrator.ops import Operations, WorkflowFilter, build_filter, parse_workflow_id

_bearer = HTTPBearer(auto_error=False, description="ORCHESTRATOR_ADMIN__TOKEN")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Selection(_Body):
    """Which workflows: ids, or a filter (every field ANDed)."""

    workflow_ids: list[str] = Field(default_factory=list, description="workflow ids (UUIDs)")
    state: list[str] = Field(default_factory=list, description="states; replay accepts only `failed`")
    type: str | None = Field(None, description="line item type, e.g. SUBSCRIPTION")
    order_id: str | None = None
    msisdn: str | None = None
    error_code: str | None = Field(None, description="e.g. provider_rejected, key_window_passed")
    older_than: str | None = Field(None, description="created at least this long ago: 90s, 15m, 2h, 3d")
    newer_than: str | None = None
    stuck_longer_than: str | None = Field(None, description="not done and unchanged for this long")
    in_jeopardy: bool | None = Field(
        None, description="true: only line items in jeopardy; false: none of them"
    )
    limit: int = Field(100, description="at most this many workflows (1..1000)")

    def to_filter(self) -> WorkflowFilter:
        return build_filter(
            workflow_ids=self.workflow_ids,
            states=self.state,
            line_item_type=self.type,
            order_id=self.order_id,
            msisdn=self.msisdn,
            error_code=self.error_code,
            older_than=self.older_than,
            newer_than=self.newer_than,
            stuck_longer_than=self.stuck_longer_than,
            in_jeopardy=self.in_jeopardy,
            limit=self.limit,
        )


class ReplayRequest(Selection):
    reason: str = Field(min_length=3, max_length=500, description="why; kept in the audit trail (required)")
    from_state: str | None = Field(None, description="step-back replay: resume to this state instead")
    expect_fingerprint: str | None = Field(
        None, description="the fingerprint of the plan you reviewed; a different plan is refused with 409"
    )
    rate_per_s: float | None = Field(None, gt=0, le=100, description="workflows per second at most")


class ActionRequest(_Body):
    reason: str = Field(min_length=3, max_length=500, description="why; kept in the audit trail (required)")


def _ops(request: Request) -> Operations:
    ops: Operations = request.app.state.ops
    return ops


def require_token(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    check: TokenCheck = request.app.state.tokens
    if credentials is None or not check.token_ok(credentials.credentials):
        raise Unauthorized("a valid `Authorization: Bearer <token>` header is required")


Actor = Annotated[str, Header(alias="X-Operator", description="who is acting (for the audit trail)")]

router = APIRouter(prefix="/api/v1", dependencies=[Depends(require_token)], tags=["operations"])


@router.get("/workflows", summary="List workflows matching filters, with counts per state")
async def list_workflows(  # noqa: PLR0917 - FastAPI maps each query parameter to one
    request: Request,
    state: Annotated[list[str] | None, Query(description="state (repeatable or comma separated)")] = None,
    type: Annotated[str | None, Query(description="line item type")] = None,
    order_id: str | None = None,
    msisdn: str | None = None,
    error_code: str | None = None,
    older_than: Annotated[str | None, Query(description="e.g. 2h")] = None,
    newer_than: str | None = None,
    stuck_longer_than: Annotated[str | None, Query(description="e.g. 30m")] = None,
    in_jeopardy: Annotated[str | None, Query(description="true: in jeopardy only; false: not")] = None,
    limit: Annotated[int, Query(description="1..1000")] = 100,
) -> dict[str, Any]:
    flt = build_filter(
        states=state,
        line_item_type=type,
        order_id=order_id,
        msisdn=msisdn,
        error_code=error_code,
        older_than=older_than,
        newer_than=newer_than,
        stuck_longer_than=stuck_longer_than,
        in_jeopardy=in_jeopardy,
        limit=limit,
    )
    return await _ops(request).list(flt)


@router.get("/workflows/{workflow_id}", summary="One workflow's whole story")
async def show_workflow(request: Request, workflow_id: str) -> dict[str, Any]:
    return await _ops(request).show(str(parse_workflow_id(workflow_id)))


@router.get("/orders/{order_id}", summary="A whole CRM order: every line item's story")
async def show_order(request: Request, order_id: str) -> dict[str, Any]:
    return await _ops(request).show(order_id)


@router.post("/replay/plan", summary="Dry run: what a replay would do (reads provider state, writes nothing)")
async def plan_replay(request: Request, body: ReplayRequest) -> dict[str, Any]:
    plan = await _ops(request).plan_replay(body.to_filter(), reason=body.reason, from_state=body.from_state)
    return plan.to_dict()


@router.post("/replay", summary="Execute a replay (give expect_fingerprint to pin the plan you reviewed)")
async def replay(request: Request, body: ReplayRequest, actor: Actor = "admin-api") -> dict[str, Any]:
    return await _ops(request).replay(
        body.to_filter(),
        reason=body.reason,
        actor=actor,
        from_state=body.from_state,
        expect_fingerprint=body.expect_fingerprint,
        rate_per_s=body.rate_per_s,
    )


@router.post("/workflows/{workflow_id}/cancel", summary="Cancel a workflow (the engine then compensates)")
async def cancel(
    request: Request, workflow_id: str, body: ActionRequest, actor: Actor = "admin-api"
) -> dict[str, Any]:
    return await _ops(request).cancel(parse_workflow_id(workflow_id), reason=body.reason, actor=actor)


@router.post("/workflows/{workflow_id}/retry-now", summary="Run a waiting workflow's next step now")
async def retry_now(
    request: Request, workflow_id: str, body: ActionRequest, actor: Actor = "admin-api"
) -> dict[str, Any]:
    return await _ops(request).retry_now(parse_workflow_id(workflow_id), reason=body.reason, actor=actor)
