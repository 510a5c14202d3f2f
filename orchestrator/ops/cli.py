"""`orchestrator workflows list|show`, `orchestrator replay`, `cancel` and `retry-now`.

A thin shell over `orchestrator.ops.Operations`: human output by default, `--json` for scripts;
errors on stderr; exit 2 for bad input (a filter, a duration, a missing reason), 1 when the
action is refused or fails. Heavy imports happen inside the commands so `--help` stays fast.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer

from orchestrator.errors import ConfigError, OrchestratorError

ops_app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
workflows_app = typer.Typer(
    help="Inspect workflows: list with filters, show one workflow's or one order's whole story.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
ops_app.add_typer(workflows_app, name="workflows")

_T = TypeVar("_T")

StateOpt = Annotated[list[str] | None, typer.Option("--state", help="State (repeatable or comma separated).")]
TypeOpt = Annotated[str | None, typer.Option("--type", help="Line item type, e.g. SUBSCRIPTION.")]
OrderOpt = Annotated[str | None, typer.Option("--order-id", help="CRM order id.")]
MsisdnOpt = Annotated[
    str | None, typer.Option("--msisdn", help="Phone number (assigned, ported or temporary).")
]
ErrorOpt = Annotated[str | None, typer.Option("--error-code", help="Error code of a failed workflow.")]
OlderOpt = Annotated[
    str | None, typer.Option("--older-than", help="Created at least this long ago (90s, 15m, 2h, 3d).")
]
NewerOpt = Annotated[str | None, typer.Option("--newer-than", help="Created at most this long ago.")]
StuckOpt = Annotated[
    str | None, typer.Option("--stuck-longer-than", help="Not done, and unchanged for this long.")
]
JeopardyOpt = Annotated[
    bool | None,
    typer.Option("--in-jeopardy/--not-in-jeopardy", help="Only line items in jeopardy (or only those not)."),
]
LimitOpt = Annotated[int, typer.Option("--limit", help="At most this many workflows (1..1000).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
ReasonOpt = Annotated[str | None, typer.Option("--reason", help="Why (required; kept in the audit trail).")]
ActorOpt = Annotated[str | None, typer.Option("--actor", help="Who is acting (default: your user name).")]


def _run(action: Callable[[Any], Awaitable[_T]]) -> _T:
    """Load settings, open `Operations`, run `action(ops)`; map errors to exit codes."""
    from orchestrator import faults  # noqa: PLC0415 - keep --help fast
    from orchestrator.ops import OpsError, open_operations  # noqa: PLC0415
    from orchestrator.settings import load_settings  # noqa: PLC0415

    async def main() -> _T:
        settings = load_settings()
        faults.arm(settings.fault_point)  # test-only crash points, as in `orchestrator run`
        async with open_operations(settings) as ops:
            return await action(ops)

    try:
        return asyncio.run(main())
    except OpsError as exc:
        typer.echo(f"error [{exc.code}]: {exc.message}", err=True)
        raise typer.Exit(code=2 if exc.bad_input else 1) from exc
    except OrchestratorError as exc:
        typer.echo(f"error [{exc.code}]: {exc.message}", err=True)
        raise typer.Exit(code=2 if isinstance(exc, ConfigError) else 1) from exc


def _filter(**raw: Any) -> Any:
    """Validate filter options before anything connects (bad input: exit 2 at once)."""
    from orchestrator.ops import InvalidInput, build_filter  # noqa: PLC0415

    try:
        return build_filter(**raw)
    except InvalidInput as exc:
        typer.echo(f"error [{exc.code}]: {exc.message}", err=True)
        raise typer.Exit(code=2) from exc


def _emit(payload: Any, *, as_json: bool, human: Callable[[Any], str]) -> None:
    if as_json:
        sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
    else:
        typer.echo(human(payload))


def _actor(actor: str | None) -> str:
    return actor or getpass.getuser()


@workflows_app.command("list")
def list_cmd(  # noqa: PLR0917 - typer maps each option to a parameter
    state: StateOpt = None,
    line_item_type: TypeOpt = None,
    order_id: OrderOpt = None,
    msisdn: MsisdnOpt = None,
    error_code: ErrorOpt = None,
    older_than: OlderOpt = None,
    newer_than: NewerOpt = None,
    stuck_longer_than: StuckOpt = None,
    in_jeopardy: JeopardyOpt = None,
    limit: LimitOpt = 100,
    as_json: JsonOpt = False,
) -> None:
    """Workflows matching every filter given, newest change first, with counts per state."""
    from orchestrator.ops._render import render_list  # noqa: PLC0415

    flt = _filter(
        states=state,
        line_item_type=line_item_type,
        order_id=order_id,
        msisdn=msisdn,
        error_code=error_code,
        older_than=older_than,
        newer_than=newer_than,
        stuck_longer_than=stuck_longer_than,
        in_jeopardy=in_jeopardy,
        limit=limit,
    )
    result = _run(lambda ops: ops.list(flt))
    _emit(result, as_json=as_json, human=render_list)


@workflows_app.command("show")
def show_cmd(
    ident: Annotated[str, typer.Argument(help="A workflow id, or a CRM order id for the whole order.")],
    as_json: JsonOpt = False,
) -> None:
    """The whole story: state, transitions, provider calls, timers, status events, operator actions."""
    from orchestrator.ops._render import render_story  # noqa: PLC0415

    story = _run(lambda ops: ops.show(ident))
    _emit(story, as_json=as_json, human=render_story)


@ops_app.command("replay")
def replay_cmd(  # noqa: PLR0917 - typer maps each option to a parameter
    workflow_ids: Annotated[list[str] | None, typer.Argument(help="Workflow ids (or use filters).")] = None,
    reason: ReasonOpt = None,
    yes: Annotated[bool, typer.Option("--yes", help="Execute the plan (without it: dry run).")] = False,
    from_state: Annotated[
        str | None, typer.Option("--from-state", help="Resume to this earlier state (step-back replay).")
    ] = None,
    rate: Annotated[float, typer.Option("--rate", help="Workflows per second at most.", min=0.01)] = 5.0,
    actor: ActorOpt = None,
    state: StateOpt = None,
    line_item_type: TypeOpt = None,
    order_id: OrderOpt = None,
    msisdn: MsisdnOpt = None,
    error_code: ErrorOpt = None,
    older_than: OlderOpt = None,
    newer_than: NewerOpt = None,
    stuck_longer_than: StuckOpt = None,
    in_jeopardy: JeopardyOpt = None,
    limit: LimitOpt = 100,
    as_json: JsonOpt = False,
) -> None:
    """Replay failed workflows: prints the plan (each call: resend, skip or rekey, decided by reading
    provider state); with --yes executes exactly that plan and records it in the audit trail."""
    from orchestrator.ops import check_reason  # noqa: PLC0415
    from orchestrator.ops._render import render_plan, render_replay  # noqa: PLC0415

    flt = _filter(
        workflow_ids=workflow_ids,
        states=state,
        line_item_type=line_item_type,
        order_id=order_id,
        msisdn=msisdn,
        error_code=error_code,
        older_than=older_than,
        newer_than=newer_than,
        stuck_longer_than=stuck_longer_than,
        in_jeopardy=in_jeopardy,
        limit=limit,
    )
    try:
        check_reason(reason)
    except OrchestratorError as exc:
        typer.echo(f"error [{exc.code}]: {exc.message}", err=True)
        raise typer.Exit(code=2) from exc

    async def go(ops: Any) -> dict[str, Any]:
        plan = await ops.plan_replay(flt, reason=reason, from_state=from_state)
        if not as_json:
            typer.echo(render_plan(plan.to_dict()))
        if not yes:
            return {"dry_run": True, "plan": plan.to_dict()}
        return dict(await ops.replay(flt, reason=reason, actor=_actor(actor), plan=plan, rate_per_s=rate))

    result = _run(go)
    if as_json:
        _emit(result, as_json=True, human=str)
    elif result.get("dry_run"):
        typer.echo("dry run: nothing changed. Run again with --yes to execute this plan.")
    else:
        typer.echo(render_replay(result))


@ops_app.command("cancel")
def cancel_cmd(
    workflow_id: Annotated[str, typer.Argument(help="The workflow to cancel.")],
    reason: ReasonOpt = None,
    actor: ActorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Cancel a workflow: it moves to `cancelling` and the engine undoes what the provider has."""
    _single_action("cancel", workflow_id, reason, actor, as_json=as_json, human=_cancelled)


@ops_app.command("retry-now")
def retry_now_cmd(
    workflow_id: Annotated[str, typer.Argument(help="The workflow waiting on a backoff or Retry-After.")],
    reason: ReasonOpt = None,
    actor: ActorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run a waiting workflow's next step now instead of after its backoff."""
    _single_action("retry_now", workflow_id, reason, actor, as_json=as_json, human=_retried)


def _single_action(
    action: str,
    workflow_id: str,
    reason: str | None,
    actor: str | None,
    *,
    as_json: bool,
    human: Callable[[Any], str],
) -> None:
    """`ops.<action>(workflow_id, reason=, actor=)`, its result printed."""
    wid = _workflow_id(workflow_id)
    result = _run(lambda ops: getattr(ops, action)(wid, reason=reason, actor=_actor(actor)))
    _emit(result, as_json=as_json, human=human)


def _cancelled(r: Any) -> str:
    return f"{r['workflow_id']}: {r['result']} (audit #{r['audit_id']})"


def _retried(r: Any) -> str:
    return (
        f"{r['workflow_id']}: next step due now (was {r['previous_due_at'] or 'not scheduled'}; "
        f"audit #{r['audit_id']})"
    )


def _workflow_id(text: str) -> Any:
    from orchestrator.ops import parse_workflow_id  # noqa: PLC0415

    try:
        return parse_workflow_id(text)
    except OrchestratorError as exc:
        typer.echo(f"error [{exc.code}]: {exc.message}", err=True)
        raise typer.Exit(code=2) from exc
