"""Workflow graphs of the eight non-SUBSCRIPTION line item types (definition version 1).

Two small definitions rather than one parameterised class: items that stay in force end in
`activated`; one-off items (top-ups, external products and items) end in `completed`. Both share the
same shape: received → awaiting_submission → submitted → done, with fail/amend/resume/cancel.
"""

from __future__ import annotations

from typing import ClassVar

from statemachine import State

from orchestrator.machines._guards import ResumeGuards
from orchestrator.machines._versioned import VersionedMachine


class ActivationItemMachineV1(ResumeGuards, VersionedMachine):
    """LICENSE, ADD_ON, SUBSCRIPTION_CHANGE, LICENSE_CHANGE, ADD_ON_CHANGE: done when activated."""

    DEFINITION_VERSION: ClassVar[int] = 1

    received = State(initial=True)
    awaiting_submission = State()
    submitted = State()
    activated = State(final=True)
    failed = State()
    cancelling = State()
    cancelled = State(final=True)

    item_added = received.to(awaiting_submission)
    order_submitted = awaiting_submission.to(submitted)
    activate = submitted.to(activated)
    fail = received.to(failed) | awaiting_submission.to(failed) | submitted.to(failed)
    amend = received.to(received) | awaiting_submission.to(received) | failed.to(received)
    resume = (
        failed.to(received, cond="resume_to_received")
        | failed.to(awaiting_submission, cond="resume_to_awaiting_submission")
        | failed.to(submitted, cond="resume_to_submitted")
    )
    cancel = (
        received.to(cancelling)
        | awaiting_submission.to(cancelling)
        | submitted.to(cancelling)
        | failed.to(cancelling)
        | cancelling.to(cancelling)
    )
    compensated = cancelling.to(cancelled)


class OneOffItemMachineV1(ResumeGuards, VersionedMachine):
    """TOP_UP, EXTERNAL_PRODUCT, EXTERNAL_ITEM: done when completed (nothing stays "active")."""

    DEFINITION_VERSION: ClassVar[int] = 1

    received = State(initial=True)
    awaiting_submission = State()
    submitted = State()
    completed = State(final=True)
    failed = State()
    cancelling = State()
    cancelled = State(final=True)

    item_added = received.to(awaiting_submission)
    order_submitted = awaiting_submission.to(submitted)
    complete = submitted.to(completed)
    fail = received.to(failed) | awaiting_submission.to(failed) | submitted.to(failed)
    amend = received.to(received) | awaiting_submission.to(received) | failed.to(received)
    resume = (
        failed.to(received, cond="resume_to_received")
        | failed.to(awaiting_submission, cond="resume_to_awaiting_submission")
        | failed.to(submitted, cond="resume_to_submitted")
    )
    cancel = (
        received.to(cancelling)
        | awaiting_submission.to(cancelling)
        | submitted.to(cancelling)
        | failed.to(cancelling)
        | cancelling.to(cancelling)
    )
    compensated = cancelling.to(cancelled)
