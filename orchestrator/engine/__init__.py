"""The provisioning engine: CRM events in, durable line item workflows, provider steps, status out.

See docs/architecture.md for the step protocol and the tables.
"""

from orchestrator.engine._clock import Clock, SystemClock
from orchestrator.engine._intake import CrmIntake
from orchestrator.engine._provider_events import ProviderEventIntake
from orchestrator.engine._scheduler import Scheduler
from orchestrator.engine._service import Worker, default_worker_id, running_worker
from orchestrator.engine._steps import RetryRules, StepRunner

__all__ = [
    "Clock",
    "CrmIntake",
    "ProviderEventIntake",
    "RetryRules",
    "Scheduler",
    "StepRunner",
    "SystemClock",
    "Worker",
    "default_worker_id",
    "running_worker",
]
