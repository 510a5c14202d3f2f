"""Named guards shared by the machines.

`resume` leaves `failed` for the state the engine recorded on the model as `resume_state` (the step
before the failure). Each target has its own named guard so that diagrams and tables show which
condition picks which target.
"""

from __future__ import annotations

from typing import Any


class ResumeGuards:
    """Mixin for machines: `resume_to_<state>()` is true when `model.resume_state == <state>`."""

    model: Any

    def _resume_target_is(self, state: str) -> bool:
        return getattr(self.model, "resume_state", None) == state

    def resume_to_received(self) -> bool:
        return self._resume_target_is("received")

    def resume_to_number_leased(self) -> bool:
        return self._resume_target_is("number_leased")

    def resume_to_awaiting_submission(self) -> bool:
        return self._resume_target_is("awaiting_submission")

    def resume_to_submitted(self) -> bool:
        return self._resume_target_is("submitted")

    def resume_to_porting_pending(self) -> bool:
        return self._resume_target_is("porting_pending")

    def resume_to_temp_number_active(self) -> bool:
        return self._resume_target_is("temp_number_active")

    def resume_to_activation_scheduled(self) -> bool:
        return self._resume_target_is("activation_scheduled")
