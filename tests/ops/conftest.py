"""Operator tests run against the same real stack as the end-to-end tests: the session's Kafka and
Postgres, a real sandbox over HTTP, a real worker. The fixtures are the e2e ones, imported (not
copied) so both suites start the stack the same way."""

from __future__ import annotations

from datetime import datetime

from orchestrator.sandbox import RunningSandbox
from tests.e2e.conftest import control, dlq, sandbox, settings, status, webhook_port, worker

__all__ = ["SandboxTime", "control", "dlq", "sandbox", "settings", "status", "webhook_port", "worker"]


class SandboxTime:
    """An engine `Clock` that follows the sandbox's clock, so moving the provider a day ahead moves
    the operator's idea of "now" too (the key window is judged by it)."""

    def __init__(self, sandbox: RunningSandbox) -> None:
        self._sandbox = sandbox

    def now(self) -> datetime:
        return self._sandbox.runtime.clock.now()
