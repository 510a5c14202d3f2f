"""The provisioning engine: decoded CRM events and provider webhooks in, durable line item
workflows, provider steps, status events out (through the outbox).

It knows nothing of Kafka or HTTP: `orchestrator.worker` composes it with those edges. Operator
tools (`orchestrator.ops`) use the public names below, and change workflows only through
`Journal.transition`. See docs/architecture.md for the step protocol and the tables.
"""

from orchestrator.engine._calls import KEY_WINDOW, KEY_WINDOW_MARGIN, CallOutcome
from orchestrator.engine._clock import Clock, SystemClock
from orchestrator.engine._errors import EventRejected
from orchestrator.engine._intake import CrmIntake, split_secrets
from orchestrator.engine._jeopardy import (
    ACTIVATION_LATE,
    PORT_STUCK,
    Jeopardy,
    JeopardyChange,
    JeopardyRules,
    decide_jeopardy,
)
from orchestrator.engine._plan import (
    Call,
    OrderCall,
    OrderItem,
    Plan,
    Poll,
    Snapshot,
    Wait,
    decide_from_snapshot,
    lapsed_leases,
    order_key,
    plan_item,
    plan_order,
    port_rejected,
    porting_details,
    porting_digest,
    step_key,
)
from orchestrator.engine._provider_events import ProviderEventIntake
from orchestrator.engine._reconcile import (
    Action,
    CallFacts,
    ConnectReader,
    Decision,
    Evidence,
    ProviderReader,
    ProviderReadFailed,
    call_facts,
    check_effect,
)
from orchestrator.engine._reconcile import decide as decide_call
from orchestrator.engine._scheduler import Scheduler
from orchestrator.engine._steps import RetryRules, StepRunner
from orchestrator.engine._transition import Chain, Journal, Move

__all__ = [
    "ACTIVATION_LATE",
    "KEY_WINDOW",
    "KEY_WINDOW_MARGIN",
    "PORT_STUCK",
    "Action",
    "Call",
    "CallFacts",
    "CallOutcome",
    "Chain",
    "Clock",
    "ConnectReader",
    "CrmIntake",
    "Decision",
    "EventRejected",
    "Evidence",
    "Jeopardy",
    "JeopardyChange",
    "JeopardyRules",
    "Journal",
    "Move",
    "OrderCall",
    "OrderItem",
    "Plan",
    "Poll",
    "ProviderEventIntake",
    "ProviderReadFailed",
    "ProviderReader",
    "RetryRules",
    "Scheduler",
    "Snapshot",
    "StepRunner",
    "SystemClock",
    "Wait",
    "call_facts",
    "check_effect",
    "decide_call",
    "decide_from_snapshot",
    "decide_jeopardy",
    "lapsed_leases",
    "order_key",
    "plan_item",
    "plan_order",
    "port_rejected",
    "porting_details",
    "porting_digest",
    "split_secrets",
    "step_key",
]
