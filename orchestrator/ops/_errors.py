"""Errors of operator actions. Each has a stable `code` (shown by the CLI, the admin API and the
console) and says whether the caller's input was at fault (`bad_input`: exit 2 / HTTP 4xx)."""

from __future__ import annotations

from typing import ClassVar

from orchestrator.errors import OrchestratorError


class OpsError(OrchestratorError):
    """Root of operator-action errors."""

    code: ClassVar[str] = "ops_error"
    http_status: ClassVar[int] = 500
    bad_input: ClassVar[bool] = False


class InvalidInput(OpsError):
    """A filter, duration, state name or reason the operator gave is not usable."""

    code = "invalid_input"
    http_status = 422
    bad_input = True


class ReasonRequired(InvalidInput):
    """Every action that changes a workflow needs a reason for the audit trail."""

    code = "reason_required"


class NotFound(OpsError):
    """No workflow or order with that id."""

    code = "not_found"
    http_status = 404
    bad_input = True


class ActionRefused(OpsError):
    """The action does not apply to the workflow as it stands (e.g. replaying an activated item)."""

    code = "action_refused"
    http_status = 409


class PlanChanged(ActionRefused):
    """The plan computed now differs from the one the operator confirmed: show it again."""

    code = "plan_changed"
