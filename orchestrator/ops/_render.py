"""Human-readable text for the CLI: one screen per story, plain columns, no colour codes."""

from __future__ import annotations

from typing import Any


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=False)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    body = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join([line, *body])


def _v(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def render_list(result: dict[str, Any]) -> str:
    counts = ", ".join(f"{state} {n}" for state, n in result["counts_by_state"].items()) or "none"
    rows = [
        [
            w["workflow_id"],
            w["order_id"],
            w["line_item_id"],
            w["line_item_type"],
            w["state"],
            _v(w["error_code"]),
            _v(w["msisdn"]),
            _v(w["updated_at"])[:19],
        ]
        for w in result["workflows"]
    ]
    shown = f"showing {len(rows)} of {result['total']}"
    headers = ["WORKFLOW", "ORDER", "LINE ITEM", "TYPE", "STATE", "ERROR", "MSISDN", "UPDATED"]
    return f"{result['total']} workflow(s): {counts} ({shown})\n" + (_table(rows, headers) if rows else "")


def _calls(calls: list[dict[str, Any]]) -> str:
    rows = [
        [
            c["step"] + (" (order)" if c["order_level"] else ""),
            c["idempotency_key"],
            c["status"],
            str(c["attempts"]),
            f"{c['latency_ms']} ms" if c["latency_ms"] is not None else "-",
            _v(c["response_status"]),
            _v((c["error"] or {}).get("code")) + _provider_message(c),
        ]
        for c in calls
    ]
    headers = ["STEP", "KEY", "STATUS", "ATT", "LATENCY", "HTTP", "ERROR"]
    return _table(rows, headers) if rows else "  (none)"


def _provider_message(call: dict[str, Any]) -> str:
    error = call["error"] or {}
    message = error.get("provider_message") or ""
    return f": {message}" if message else ""


def _workflow_block(w: dict[str, Any]) -> list[str]:
    lines = [
        f"workflow {w['workflow_id']}  {w['line_item_type']} line item {w['line_item_id']}"
        f" of order {w['order_id']}",
        f"  state      {w['state']}" + (f" (resumes to {w['resume_state']})" if w["resume_state"] else ""),
        f"  generation {w['generation']}   version {w['version']}   attempts {w['attempts']}",
    ]
    if w.get("error"):
        e = w["error"]
        lines.append(f"  error      {e.get('code')} at {e.get('step')}: {e.get('message')}")
    lines.append("  transitions:")
    for t in w["transitions"]:
        lines.append(
            f"    #{t['sequence']:<3} {t['occurred_at'][:23]}  {_v(t['from_state']):>20} -> "
            f"{t['to_state']:<20} {t['event']} ({t['cause']})"
        )
    lines.append("  provider calls:")
    lines.extend("    " + line for line in _calls(w["provider_calls"]).splitlines())
    pending = [t for t in w["timers"] if t["pending"]]
    lines.append(
        "  pending timers: " + (", ".join(f"{t['kind']} due {t['due_at']}" for t in pending) or "none")
    )
    return lines


def _audit_lines(audit: list[dict[str, Any]]) -> list[str]:
    lines = ["operator actions:"] if audit else ["operator actions: none"]
    for a in audit:
        outcome = a["outcome"] or {}
        summary = {
            k: v for k, v in outcome.items() if k in ("resumed", "stale", "refused", "result", "error")
        }
        lines.append(
            f"  #{a['id']} {a['created_at'][:19]} {a['actor']} {a['action']}: {a['reason']} -> {summary}"
        )
    return lines


def _events(events: list[dict[str, Any]]) -> list[str]:
    lines = [f"status events ({len(events)}):"]
    for e in events:
        published = "published" if e["published_at"] else "NOT YET PUBLISHED"
        what = e["state"] if e["line_item_id"] is None else f"{e['line_item_id']} {e['state']}"
        lines.append(f"  #{e['outbox_id']} {e['type']} {what} seq {e['sequence']} ({published})")
    return lines


def render_story(story: dict[str, Any]) -> str:
    order = story["order"]
    lines = [
        f"order {order['order_id']}  state {order['state']}  provider order {_v(order['provider_order_id'])}",
        f"  submitted {_v(order['submitted_at'])}  cancelled {_v(order['cancelled_at'])}",
    ]
    if story["kind"] == "workflow":
        w = story["workflow"]
        lines += _workflow_block({**w, **{k: story[k] for k in ("transitions", "provider_calls", "timers")}})
    else:
        for w in story["workflows"]:
            lines.append("")
            lines += _workflow_block(w)
    lines.append("")
    lines.append("order-level provider calls:")
    lines.extend("  " + line for line in _calls(story["order_calls"]).splitlines())
    lines.append("")
    lines += _events(story["status_events"])
    lines.append("")
    lines += _audit_lines(story["audit"])
    return "\n".join(lines)


def render_plan(plan: dict[str, Any]) -> str:
    s = plan["summary"]
    actions = ", ".join(f"{k} {v}" for k, v in sorted(s["actions"].items())) or "no provider calls to settle"
    lines = [
        f"replay plan {plan['fingerprint']}: {s['replayable']} of {s['workflows']} workflow(s) replayable; "
        f"calls: {actions}",
        f"  reason: {plan['reason']}"
        + (f"   from state: {plan['from_state']}" if plan["from_state"] else ""),
    ]
    for w in plan["workflows"]:
        head = f"- {w['workflow_id']} ({w['order_id']}/{w['line_item_id']}, {_v(w['error_code'])})"
        if not w["replayable"]:
            lines.append(f"{head}: NOT REPLAYED: {w['refused']}")
            continue
        step = w["next_step"]
        key = f" key {step['idempotency_key']}" if step.get("idempotency_key") else ""
        gen = (
            f", generation {w['generation']} -> {w['generation_after']}"
            if w["generation_after"] != w["generation"]
            else ""
        )
        lines.append(f"{head}: resume to {w['resume_to']}{gen}; then {step['kind']} {step['step']}{key}")
        if step.get("what") and w["request_port"]:
            lines.append(f"    {step['what']}")
        lines.extend(f"  WARNING: {msg}" for msg in w["warnings"])
        for c in w["calls"]:
            new = f" -> {c['new_key']}" if c["new_key"] else ""
            lines.append(f"    {c['action'].upper():7} {c['step']} {c['idempotency_key']}{new}: {c['why']}")
    for o in plan["orders"]:
        for c in o["calls"]:
            new = f" -> {c['new_key']}" if c["new_key"] else ""
            lines.append(
                f"  order {o['order_id']}: {c['action'].upper()} {c['step']} {c['idempotency_key']}{new}"
            )
            lines.append(f"    {c['why']}")
        lines.extend(f"  WARNING: {w}" for w in o["warnings"])
    return "\n".join(lines)


def render_replay(result: dict[str, Any]) -> str:
    o = result["outcome"]
    lines = [
        f"replay done (audit #{result['audit_id']}): {o['resumed']} resumed, {o['stale']} stale, "
        f"{o['refused']} refused"
    ]
    for r in o["results"]:
        lines.append(f"- {r['workflow_id']}: {r['result']}: {r['detail']}")
    return "\n".join(lines)
