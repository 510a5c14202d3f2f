"""What the engine refuses to apply, with a stable reason the edge that delivered it can act on."""

from __future__ import annotations

from orchestrator.errors import OrchestratorError


class EventRejected(OrchestratorError):
    """An event that cannot be applied, now or ever (an unknown order, an order submitted twice, a
    value the database cannot hold). The edge dead-letters it with `reason`; retrying cannot help."""

    code = "event_rejected"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message, reason=reason)
        self.reason = reason
