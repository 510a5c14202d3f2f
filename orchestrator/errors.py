"""One error root for the whole service, with decision data on each error.

Every boundary (Kafka, Postgres, HTTP, subprocesses) translates foreign exceptions into these,
keeping the cause (`raise ... from exc`). `code` is stable and machine-readable: it is stored on
failed workflows, shown to operators and documented in docs/operations.md. `retryable` tells the
engine whether trying again can help.
"""

from __future__ import annotations

from typing import Any, ClassVar


class OrchestratorError(Exception):
    """Root of every error the orchestrator raises on purpose."""

    code: ClassVar[str] = "orchestrator_error"
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "retryable": self.retryable, **self.details}


class ConfigError(OrchestratorError):
    """A setting is missing or invalid; raised once at start-up."""

    code = "config_invalid"


class LocalStackError(OrchestratorError):
    """A local service (Kafka, Postgres, sandbox) could not be fetched, started or stopped."""

    code = "local_stack_failed"


class StoreError(OrchestratorError):
    """Postgres refused or failed an operation."""

    code = "store_error"
    retryable = True


class MigrationError(StoreError):
    """Migrations cannot be applied as they stand (edited, missing or broken files)."""

    code = "migration_refused"
    retryable = False
