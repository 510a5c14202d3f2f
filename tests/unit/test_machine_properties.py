"""Property tests: random event sequences only ever take declared transitions, and final stays final."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from statemachine import StateMachine
from test_machines import SPECS

from orchestrator.machines import (
    TERMINAL_STATES,
    MachineModel,
    Transitioned,
    TransitionNotAllowed,
    event_names,
    initial_state,
    try_event,
)

MACHINES = list(SPECS)


@st.composite
def runs(draw: st.DrawFn) -> tuple[type[StateMachine], list[tuple[str, str | None]]]:
    machine = draw(st.sampled_from(MACHINES))
    states = sorted(state.id for state in machine.states)
    steps = draw(
        st.lists(
            st.tuples(st.sampled_from(sorted(event_names(machine))), st.none() | st.sampled_from(states)),
            max_size=40,
        )
    )
    return machine, steps


@settings(max_examples=300, deadline=None)
@given(run=runs())
def test_random_event_sequences_follow_the_declared_graph(
    run: tuple[type[StateMachine], list[tuple[str, str | None]]],
) -> None:
    machine_cls, steps = run
    spec = SPECS[machine_cls]
    row = MachineModel(state=initial_state(machine_cls))
    machine = machine_cls(model=row)

    for event, resume_state in steps:
        row.resume_state = resume_state
        before = row.state
        assert before is not None
        candidates = {
            (target, guard) for (source, name, target, guard) in spec if source == before and name == event
        }
        outcome = try_event(machine, event=event)

        if isinstance(outcome, Transitioned):
            assert (outcome.source, outcome.target) == (before, row.state)
            assert any(
                target == outcome.target and guard in (None, f"resume_to_{resume_state}")
                for target, guard in candidates
            )
        else:
            assert isinstance(outcome, TransitionNotAllowed)
            assert row.state == before
            assert all(guard is not None and guard != f"resume_to_{resume_state}" for _, guard in candidates)
        if before in TERMINAL_STATES:
            assert isinstance(outcome, TransitionNotAllowed)
            assert row.state == before
