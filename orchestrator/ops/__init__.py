"""Operator tools: inspect, replay, cancel and retry-now failed or stuck workflows (no HTTP here).

    async with open_operations(settings) as ops:
        story = await ops.show("crm-order-42")
        plan = await ops.plan_replay(build_filter(error_code="provider_rejected"), reason="outage over")
        done = await ops.replay(WorkflowFilter(), plan=plan, reason=plan.reason, actor="alice")

The CLI (`orchestrator workflows|replay|cancel|retry-now`, in `ops/cli.py`) and the admin API
(`orchestrator/admin/`) are thin shells over `Operations`. See docs/operations.md.
"""

from orchestrator.engine import (
    Action,
    CallFacts,
    Clock,
    ConnectReader,
    Evidence,
    ProviderReader,
    ProviderReadFailed,
    decide_call,
)
from orchestrator.ops._errors import (
    ActionRefused,
    InvalidInput,
    NotFound,
    OpsError,
    PlanChanged,
    ReasonRequired,
)
from orchestrator.ops._filters import (
    WorkflowFilter,
    build_filter,
    known_states,
    parse_duration,
    parse_workflow_id,
)
from orchestrator.ops._operations import (
    Operations,
    check_actor,
    check_reason,
    open_operations,
    probe_provider,
)
from orchestrator.ops._replay import CallPlan, ReplayPlan, WorkflowPlan
from orchestrator.ops._tracing import enable_tracing, set_tracer, span

__all__ = [
    "Action",
    "ActionRefused",
    "CallFacts",
    "CallPlan",
    "Clock",
    "ConnectReader",
    "Evidence",
    "InvalidInput",
    "NotFound",
    "Operations",
    "OpsError",
    "PlanChanged",
    "ProviderReadFailed",
    "ProviderReader",
    "ReasonRequired",
    "ReplayPlan",
    "WorkflowFilter",
    "WorkflowPlan",
    "build_filter",
    "check_actor",
    "check_reason",
    "decide_call",
    "enable_tracing",
    "known_states",
    "open_operations",
    "parse_duration",
    "parse_workflow_id",
    "probe_provider",
    "set_tracer",
    "span",
]
