"""The base class of every workflow machine: a python-statemachine `StateMachine` with a version."""

from __future__ import annotations

from typing import ClassVar

from statemachine import StateMachine


class VersionedMachine(StateMachine):
    """A `StateMachine` (not `StateChart`: callback errors must propagate) that declares its version.

    `DEFINITION_VERSION` is stored on every workflow row; bump it (and keep the old class registered)
    whenever a change could strand a stored state or change what an event does.
    """

    DEFINITION_VERSION: ClassVar[int]
