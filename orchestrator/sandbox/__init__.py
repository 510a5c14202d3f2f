"""A local stand-in for the provider's Connect API: a real HTTP server with the documented states,
idempotency, webhooks, a controllable clock, scenario switches, injected faults and a ledger.

See docs/connect-sandbox.md. Tests use `run_sandbox(config)`; the CLI uses `serve(...)`.
"""

from orchestrator.sandbox._app import create_app
from orchestrator.sandbox._config import SandboxConfig
from orchestrator.sandbox._control import details_digest
from orchestrator.sandbox._faults import FaultRule
from orchestrator.sandbox._runner import RunningSandbox, run_sandbox, serve
from orchestrator.sandbox._scenario import PortPlan, Scenario, ScenarioPatch
from orchestrator.sandbox.control import SandboxControl

__all__ = [
    "FaultRule",
    "PortPlan",
    "RunningSandbox",
    "SandboxConfig",
    "SandboxControl",
    "Scenario",
    "ScenarioPatch",
    "create_app",
    "details_digest",
    "run_sandbox",
    "serve",
]
