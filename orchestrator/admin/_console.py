"""The web console: the same operations as the API, as server-rendered pages.

Sign-in: the admin token once (login form, or `?token=` on any console URL), which sets an
HttpOnly, SameSite=Strict cookie derived from it. A replay always shows its dry-run plan first;
the confirm button carries the plan's fingerprint, so what runs is what was shown (a changed
plan is refused and shown again).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from orchestrator.admin import _html as h
from orchestrator.admin._auth import COOKIE, OPERATOR_COOKIE, TokenCheck
from orchestrator.admin._diagram import state_diagram_svg, transitions_from
from orchestrator.events import LineItemType
from orchestrator.machines import is_settled, machine_for
from orchestrator.ops import (
    Operations,
    OpsError,
    ReplayPlan,
    WorkflowFilter,
    build_filter,
    known_states,
    parse_workflow_id,
)

router = APIRouter(prefix="/console", include_in_schema=False)
FILTER_FIELDS = (
    "state",
    "type",
    "order_id",
    "msisdn",
    "error_code",
    "older_than",
    "newer_than",
    "stuck_longer_than",
    "in_jeopardy",
    "limit",
)


def _ops(request: Request) -> Operations:
    ops: Operations = request.app.state.ops
    return ops


def _signed_in(request: Request) -> bool:
    tokens: TokenCheck = request.app.state.tokens
    return tokens.session_ok(request.cookies.get(COOKIE))


def _actor(request: Request) -> str:
    return request.cookies.get(OPERATOR_COOKIE) or "console"


async def _form(request: Request) -> dict[str, str]:
    raw = (await request.body()).decode("utf-8", "replace")
    return {k: v[-1] for k, v in parse_qs(raw, keep_blank_values=True).items()}


def _gate(request: Request) -> Response | None:
    """None when signed in; otherwise the response that signs in (token in the URL) or asks to."""
    tokens: TokenCheck = request.app.state.tokens
    token = request.query_params.get("token")
    if token is not None and tokens.token_ok(token):
        rest = {k: v for k, v in request.query_params.multi_items() if k != "token"}
        target = request.url.path + ("?" + h.query(rest) if rest else "")
        response = RedirectResponse(target, status_code=303)
        _set_session(response, tokens)
        return response
    if _signed_in(request):
        return None
    return RedirectResponse(f"/console/login?next={quote(str(request.url.path))}", status_code=303)


def _set_session(response: Response, tokens: TokenCheck) -> None:
    response.set_cookie(COOKIE, tokens.session, httponly=True, samesite="strict", path="/")


def _error_page(exc: OpsError) -> HTMLResponse:
    body = f'<div class="error" id="error"><strong>{h.text(exc.code)}</strong>: {h.text(exc.message)}</div>'
    return HTMLResponse(
        h.page("Error", body + h.link("/console", "Back to workflows")), status_code=exc.http_status
    )


@router.get("/login")
async def login_form(request: Request, next: str = "/console", failed: bool = False) -> HTMLResponse:
    note = '<div class="error">That token is not valid.</div>' if failed else ""
    body = (
        f"<h1>Sign in</h1>{note}<form method=post action=/console/login>"
        f"{h.hidden('next', next)}<label>Your name <input name=operator required></label> "
        "<label>Admin token <input name=token type=password required></label> "
        "<button id=sign-in type=submit>Sign in</button></form>"
    )
    return HTMLResponse(h.page("Sign in", body), status_code=401 if failed else 200)


@router.post("/login")
async def login(request: Request) -> Response:
    form = await _form(request)
    tokens: TokenCheck = request.app.state.tokens
    target = form.get("next") or "/console"
    if not target.startswith("/console"):
        target = "/console"
    if not tokens.token_ok(form.get("token")):
        return RedirectResponse(f"/console/login?failed=1&next={quote(target)}", status_code=303)
    response = RedirectResponse(target, status_code=303)
    _set_session(response, tokens)
    operator = (form.get("operator") or "").strip()[:100]
    if operator:
        response.set_cookie(OPERATOR_COOKIE, operator, httponly=True, samesite="strict", path="/")
    return response


@router.get("/logout")
async def logout() -> Response:
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


def _filter_form(params: dict[str, str]) -> str:
    types = [t.value for t in LineItemType]
    states = h.options(sorted(known_states()), params.get("state"))
    return (
        "<form method=get action=/console id=search class=inline>"
        f"<label>State <select name=state>{states}</select></label>"
        f"<label>Type <select name=type>{h.options(types, params.get('type'))}</select></label>"
        f'<label>Order <input name=order_id size=12 value="{h.attr(params.get("order_id"))}"></label>'
        f'<label>MSISDN <input name=msisdn size=12 value="{h.attr(params.get("msisdn"))}"></label>'
        f"<label>Error code <input name=error_code size=14 "
        f'value="{h.attr(params.get("error_code"))}"></label>'
        f"<label>Stuck longer than <input name=stuck_longer_than size=5 placeholder=30m "
        f'value="{h.attr(params.get("stuck_longer_than"))}"></label>'
        "<label>In jeopardy <input type=checkbox name=in_jeopardy value=true"
        f"{' checked' if params.get('in_jeopardy') == 'true' else ''}></label>"
        "<button type=submit id=search-button>Search</button></form>"
    )


@router.get("")
async def workflows(request: Request) -> Response:
    if (gate := _gate(request)) is not None:
        return gate
    params = {k: v for k, v in request.query_params.items() if k in FILTER_FIELDS and v}
    try:
        result = await _ops(request).list(_selection(params))
        counts = await _ops(request).counts()
    except OpsError as exc:
        return _error_page(exc)
    chips = " ".join(
        h.link("/console?" + h.query({"state": state}), f"{state} {n}") for state, n in sorted(counts.items())
    )
    rows = [
        [
            h.link(h.workflow_href(w["workflow_id"]), w["line_item_id"], cls="workflow-link"),
            h.link(h.order_href(w["order_id"]), w["order_id"]),
            h.text(w["line_item_type"]),
            h.state_badge(w["state"]),
            h.text(w["error_code"]),
            h.text(w["msisdn"]),
            h.text((w["updated_at"] or "")[:19]),
            f"<code>{h.text(w['workflow_id'])}</code>",
        ]
        for w in result["workflows"]
    ]
    bulk = ""
    if result["counts_by_state"].get("failed"):
        hidden = "".join(h.hidden(k, v) for k, v in params.items() if k != "state")
        bulk = (
            "<form method=post action=/console/replay/plan class=inline id=bulk-replay>"
            f"{hidden}{h.hidden('state', 'failed')}<label>Replay every failed workflow matching this search: "
            "reason <input name=reason required minlength=3></label>"
            "<button type=submit>Plan replay…</button></form>"
        )
    body = (
        f"<h1>Workflows</h1><p class=chips id=counts>All workflows by state: {chips or 'none yet'}</p>"
        f"{_filter_form(params)}{bulk}"
        f"<p id=total>{result['total']} matching; showing {len(rows)}</p>"
        + h.table(
            ["Line item", "Order", "Type", "State", "Error", "MSISDN", "Updated", "Workflow id"],
            rows,
            table_id="workflows",
        )
    )
    return HTMLResponse(h.page("Workflows", body, flash=request.query_params.get("flash")))


def _calls_table(calls: list[dict[str, Any]], *, table_id: str = "calls") -> str:
    rows = [
        [
            h.text(c["step"]) + (" <span class=muted>(order)</span>" if c["order_level"] else ""),
            f"<code>{h.text(c['idempotency_key'])}</code>",
            h.text(c["status"]),
            h.text(c["attempts"]),
            h.text(f"{c['latency_ms']} ms" if c["latency_ms"] is not None else None),
            h.text(c["response_status"]),
            h.text((c["error"] or {}).get("code"))
            + " "
            + h.text((c["error"] or {}).get("provider_message") or ""),
            h.text((c["last_sent_at"] or "")[:19]),
        ]
        for c in calls
    ]
    return h.table(
        ["Step", "Idempotency key", "Status", "Attempts", "Latency", "HTTP", "Error", "Last sent"],
        rows,
        table_id=table_id,
    )


def _timeline(transitions: list[dict[str, Any]]) -> str:
    rows = [
        [
            h.text(t["sequence"]),
            h.text(t["occurred_at"][:23]),
            h.text(t["from_state"]),
            h.state_badge(t["to_state"]),
            h.text(t["event"]),
            h.text(t["cause"]),
            h.text(
                (t["details"] or {}).get("reason") or ((t["details"] or {}).get("error") or {}).get("code")
            ),
        ]
        for t in transitions
    ]
    return h.table(["#", "When", "From", "To", "Event", "Cause", "Why"], rows, table_id="timeline")


def _actions(w: dict[str, Any], machine: Any) -> str:
    wid = w["workflow_id"]
    parts = []
    if w["state"] == "failed":
        targets = sorted(t for event, t in transitions_from(machine, "failed") if event == "resume")
        parts.append(
            "<form method=post action=/console/replay/plan class=inline id=replay-form>"
            f"{h.hidden('workflow_ids', wid)}<strong>Replay</strong> "
            "<label>reason <input name=reason id=replay-reason required minlength=3></label>"
            f"<label>resume to <select name=from_state>{h.options(targets, None, blank='where it failed')}"
            "</select></label><button type=submit id=plan-replay>Plan replay…</button></form>"
        )
    if (
        any(event == "cancel" for event, _ in transitions_from(machine, w["state"]))
        and w["state"] != "cancelling"
    ):
        parts.append(
            f"<form method=post action=/console/workflows/{h.text(wid)}/cancel class=inline id=cancel-form>"
            "<strong>Cancel</strong> <label>reason <input name=reason required minlength=3></label>"
            "<button type=submit id=cancel-button>Cancel workflow</button></form>"
        )
    if not is_settled(w["state"]):
        parts.append(
            f"<form method=post action=/console/workflows/{h.text(wid)}/retry-now class=inline id=retry-form>"
            "<strong>Retry now</strong> <label>reason <input name=reason required minlength=3></label>"
            "<button type=submit>Run next step now</button></form>"
        )
    return "".join(parts)


def _workflow_section(w: dict[str, Any], story: dict[str, Any]) -> str:
    machine = machine_for(w["line_item_type"], w["definition_version"])
    error = w.get("error")
    error_html = (
        f'<div class="error" id="workflow-error"><strong>{h.text(error.get("code"))}</strong> at '
        f"{h.text(error.get('step'))}: {h.text(error.get('message'))}</div>"
        if error
        else ""
    )
    moves = h.table(
        ["Event", "Leads to"], [[h.text(e), h.text(t)] for e, t in transitions_from(machine, w["state"])]
    )
    pending = [t for t in story["timers"] if t["pending"]]
    return (
        f"<p>State {h.state_badge(w['state'], element_id='state')}"
        + (f" · resumes to {h.text(w['resume_state'])}" if w["resume_state"] else "")
        + f" · generation {h.text(w['generation'])} · attempts {h.text(w['attempts'])}"
        f" · MSISDN {h.text(w['msisdn'])}</p>{error_html}{_actions(w, machine)}"
        f"<h2>State diagram ({h.text(machine.__name__)})</h2>{state_diagram_svg(machine, current=w['state'])}"
        f"<h2>From here</h2>{moves}<h2>Timeline</h2>{_timeline(story['transitions'])}"
        f"<h2>Provider calls</h2>{_calls_table(story['provider_calls'])}"
        f"<h2>Pending timers</h2><p>"
        + (", ".join(f"{h.text(t['kind'])} due {h.text(t['due_at'])}" for t in pending) or "none")
        + "</p>"
    )


def _events_and_audit(story: dict[str, Any]) -> str:
    events = [
        [
            h.text(e["outbox_id"]),
            h.text(e["type"]),
            h.text(e["line_item_id"]),
            h.state_badge(e["state"]),
            h.text(e["sequence"]),
            "yes" if e["published_at"] else "<strong>not yet</strong>",
        ]
        for e in story["status_events"]
    ]
    audit = [
        [
            h.text(a["id"]),
            h.text(a["created_at"][:19]),
            h.text(a["actor"]),
            h.text(a["action"]),
            h.text(a["reason"]),
            h.text({k: v for k, v in (a["outcome"] or {}).items() if k != "results"}),
        ]
        for a in story["audit"]
    ]
    return (
        "<h2>Status events emitted</h2>"
        + h.table(["#", "Type", "Line item", "State", "Seq", "Published"], events, table_id="events")
        + "<h2>Operator actions</h2>"
        + h.table(["#", "When", "Who", "What", "Why", "Outcome"], audit, table_id="audit")
    )


@router.get("/workflows/{workflow_id}")
async def workflow_page(request: Request, workflow_id: str) -> Response:
    if (gate := _gate(request)) is not None:
        return gate
    try:
        story = await _ops(request).show(str(parse_workflow_id(workflow_id)))
    except OpsError as exc:
        return _error_page(exc)
    w = story["workflow"]
    order = story["order"]
    body = (
        f"<h1>Line item {h.text(w['line_item_id'])} ({h.text(w['line_item_type'])}) of order "
        f"{h.link(h.order_href(order['order_id']), order['order_id'])}</h1>"
        f"<p class=muted>workflow <code id=workflow-id>{h.text(w['workflow_id'])}</code> · order state "
        f"{h.state_badge(order['state'])}</p>"
        + _workflow_section(w, story)
        + "<h2>Order-level provider calls</h2>"
        + _calls_table(story["order_calls"], table_id="order-calls")
        + _events_and_audit(story)
    )
    # While the engine is working on it, the page follows along by itself.
    refresh = None if is_settled(w["state"]) else 2
    return HTMLResponse(
        h.page(
            f"Workflow {w['line_item_id']}", body, refresh_s=refresh, flash=request.query_params.get("flash")
        )
    )


@router.get("/orders/{order_id}")
async def order_page(request: Request, order_id: str) -> Response:
    if (gate := _gate(request)) is not None:
        return gate
    try:
        story = await _ops(request).show(order_id)
    except OpsError as exc:
        return _error_page(exc)
    if story["kind"] != "order":
        return RedirectResponse(h.workflow_href(story["workflow"]["workflow_id"]), status_code=303)
    order = story["order"]
    items = [
        [
            h.link(h.workflow_href(w["workflow_id"]), w["line_item_id"], cls="workflow-link"),
            h.text(w["line_item_type"]),
            h.state_badge(w["state"]),
            h.text(w["error_code"]),
            h.text(w["msisdn"]),
        ]
        for w in story["workflows"]
    ]
    body = (
        f"<h1>Order {h.text(order['order_id'])}</h1>"
        f"<p>State {h.state_badge(order['state'], element_id='state')}"
        f" · provider order <code>{h.text(order['provider_order_id'])}</code> · submitted "
        f"{h.text(order['submitted_at'])}</p>"
        + h.table(["Line item", "Type", "State", "Error", "MSISDN"], items, table_id="items")
        + "<h2>Order-level provider calls</h2>"
        + _calls_table(story["order_calls"], table_id="order-calls")
        + _events_and_audit(story)
    )
    return HTMLResponse(h.page(f"Order {order['order_id']}", body, flash=request.query_params.get("flash")))


def _selection(form: dict[str, str]) -> WorkflowFilter:
    """The filter a search or a form names (blank fields mean "any")."""
    limit = form.get("limit", "100")
    return build_filter(
        workflow_ids=[form["workflow_ids"]] if form.get("workflow_ids") else None,
        states=[form["state"]] if form.get("state") else None,
        line_item_type=form.get("type") or None,
        order_id=form.get("order_id"),
        msisdn=form.get("msisdn"),
        error_code=form.get("error_code"),
        older_than=form.get("older_than") or None,
        newer_than=form.get("newer_than") or None,
        stuck_longer_than=form.get("stuck_longer_than") or None,
        in_jeopardy=form.get("in_jeopardy") or None,
        limit=int(limit) if limit.isdigit() else 0,
    )


def _plan_page(plan: ReplayPlan, *, note: str | None = None) -> str:
    data = plan.to_dict()
    rows = []
    for w in data["workflows"]:
        calls = "<br>".join(
            f"<span class=action data-action={h.text(c['action'])}>{h.text(c['action'].upper())}</span> "
            f"{h.text(c['step'])} <code>{h.text(c['idempotency_key'])}</code>"
            + (f" → <code>{h.text(c['new_key'])}</code>" if c["new_key"] else "")
            + f"<br><span class=muted>{h.text(c['why'])}</span>"
            for c in w["calls"]
        )
        step = w["next_step"]
        then = f"{h.text(step.get('kind'))} {h.text(step.get('step'))}" if w["replayable"] else ""
        rows.append(
            [
                h.link(h.workflow_href(w["workflow_id"]), w["line_item_id"]),
                h.text(w["order_id"]),
                h.text(w["error_code"]),
                h.text(w["resume_to"])
                if w["replayable"]
                else f"<strong>not replayed</strong>: {h.text(w['refused'])}",
                then,
                calls or "<span class=muted>no unsettled calls</span>",
            ]
        )
    warnings = "".join(
        f'<div class="error">{h.text(msg)}</div>'
        for o in [*data["workflows"], *data["orders"]]
        for msg in o["warnings"]
    ) + "".join(
        f'<div class="flash">Order {h.text(o["order_id"])}: '
        f"{h.text(c['action'].upper())} {h.text(c['step'])} "
        f"— {h.text(c['why'])}</div>"
        for o in data["orders"]
        for c in o["calls"]
    )
    confirm = ""
    if plan.replayable:
        confirm = (
            "<form method=post action=/console/replay id=confirm-form>"
            f"{h.hidden('workflow_ids', ','.join(w['workflow_id'] for w in data['workflows']))}"
            f"{h.hidden('reason', plan.reason)}{h.hidden('from_state', plan.from_state)}"
            f"{h.hidden('fingerprint', plan.fingerprint)}"
            f"<button type=submit id=confirm-replay>Confirm replay of {len(plan.replayable)} "
            "workflow(s)</button> "
            '<a href="/console">Back without replaying</a></form>'
        )
    return h.page(
        "Replay plan",
        f"<h1>Replay plan <code id=fingerprint>{h.text(plan.fingerprint)}</code></h1>"
        f"<p>Dry run: nothing has changed yet. Reason: <em>{h.text(plan.reason)}</em></p>{warnings}"
        + h.table(
            ["Line item", "Order", "Error", "Resumes to", "Then", "Provider calls"],
            rows,
            table_id="plan",
            cls="plan",
        )
        + confirm,
        flash=note,
    )


@router.post("/replay/plan")
async def replay_plan(request: Request) -> Response:
    if (gate := _gate(request)) is not None:
        return gate
    form = await _form(request)
    try:
        plan = await _ops(request).plan_replay(
            _selection(form), reason=form.get("reason"), from_state=form.get("from_state") or None
        )
    except OpsError as exc:
        return _error_page(exc)
    return HTMLResponse(_plan_page(plan))


@router.post("/replay")
async def replay_confirm(request: Request) -> Response:
    if (gate := _gate(request)) is not None:
        return gate
    form = await _form(request)
    ops = _ops(request)
    try:
        flt = _selection(form)
        result = await ops.replay(
            flt,
            reason=form.get("reason"),
            actor=_actor(request),
            from_state=form.get("from_state") or None,
            expect_fingerprint=form.get("fingerprint") or "",
        )
    except OpsError as exc:
        if exc.code == "plan_changed":
            plan = await ops.plan_replay(
                flt, reason=form.get("reason"), from_state=form.get("from_state") or None
            )
            return HTMLResponse(_plan_page(plan, note=exc.message), status_code=409)
        return _error_page(exc)
    outcome = result["outcome"]
    flash = (
        f"Replay done (audit #{result['audit_id']}): {outcome['resumed']} resumed, {outcome['stale']} stale"
    )
    ids = [w["workflow_id"] for w in result["plan"]["workflows"]]
    target = h.workflow_href(ids[0]) if len(ids) == 1 else "/console"
    return RedirectResponse(f"{target}?{h.query({'flash': flash})}", status_code=303)


async def _single_action(request: Request, workflow_id: str, action: str) -> Response:
    if (gate := _gate(request)) is not None:
        return gate
    form = await _form(request)
    ops = _ops(request)
    try:
        wid = parse_workflow_id(workflow_id)
        call = ops.cancel if action == "cancel" else ops.retry_now
        result = await call(wid, reason=form.get("reason"), actor=_actor(request))
    except OpsError as exc:
        return _error_page(exc)
    flash = f"{action}: {result['result']} (audit #{result['audit_id']})"
    return RedirectResponse(f"{h.workflow_href(workflow_id)}?{h.query({'flash': flash})}", status_code=303)


@router.post("/workflows/{workflow_id}/cancel")
async def cancel(request: Request, workflow_id: str) -> Response:
    return await _single_action(request, workflow_id, "cancel")


@router.post("/workflows/{workflow_id}/retry-now")
async def retry_now(request: Request, workflow_id: str) -> Response:
    return await _single_action(request, workflow_id, "retry-now")
