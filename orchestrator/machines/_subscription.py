"""The SUBSCRIPTION line item workflow graph (definition version 1).

Sync and free of I/O on purpose: the engine asks the machine whether a transition is allowed, then
does the provider call and the database write itself (see design-notes "The step protocol").
"""

from __future__ import annotations

from typing import ClassVar

from statemachine import State

from orchestrator.machines._guards import ResumeGuards
from orchestrator.machines._versioned import VersionedMachine


class SubscriptionMachineV1(ResumeGuards, VersionedMachine):
    """A new subscription: number choice (assigned, leased, ported, ported with a temporary number),
    submission to the provider, optional scheduled activation, and cancellation with compensation.
    """

    DEFINITION_VERSION: ClassVar[int] = 1

    received = State(initial=True)
    number_leased = State()
    awaiting_submission = State()
    submitted = State()
    porting_pending = State()
    temp_number_active = State()
    activation_scheduled = State()
    activated = State(final=True)
    failed = State()
    cancelling = State()
    cancelled = State(final=True)

    lease_confirmed = received.to(number_leased)
    item_added = received.to(awaiting_submission) | number_leased.to(awaiting_submission)
    order_submitted = awaiting_submission.to(submitted)
    port_requested = submitted.to(porting_pending)
    temp_number_activated = porting_pending.to(temp_number_active)
    activation_deferred = submitted.to(activation_scheduled) | porting_pending.to(activation_scheduled)
    activate = (
        submitted.to(activated)
        | porting_pending.to(activated)
        | temp_number_active.to(activated)
        | activation_scheduled.to(activated)
    )
    fail = (
        received.to(failed)
        | number_leased.to(failed)
        | awaiting_submission.to(failed)
        | submitted.to(failed)
        | porting_pending.to(failed)
        | temp_number_active.to(failed)
        | activation_scheduled.to(failed)
    )
    amend = (
        received.to(received)
        | number_leased.to(received)
        | awaiting_submission.to(received)
        | failed.to(received)
        | porting_pending.to(porting_pending)
        | temp_number_active.to(temp_number_active)
    )
    # A rejected port on a temporary number, resolved by keeping that number for good.
    keep_temporary_number = failed.to(activated)
    resume = (
        failed.to(received, cond="resume_to_received")
        | failed.to(number_leased, cond="resume_to_number_leased")
        | failed.to(awaiting_submission, cond="resume_to_awaiting_submission")
        | failed.to(submitted, cond="resume_to_submitted")
        | failed.to(porting_pending, cond="resume_to_porting_pending")
        | failed.to(temp_number_active, cond="resume_to_temp_number_active")
        | failed.to(activation_scheduled, cond="resume_to_activation_scheduled")
    )
    cancel = (
        received.to(cancelling)
        | number_leased.to(cancelling)
        | awaiting_submission.to(cancelling)
        | submitted.to(cancelling)
        | porting_pending.to(cancelling)
        | temp_number_active.to(cancelling)
        | activation_scheduled.to(cancelling)
        | failed.to(cancelling)
        | cancelling.to(cancelling)
    )
    compensated = cancelling.to(cancelled)
