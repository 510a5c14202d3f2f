"""The expected event sequence of every subscription path, as data.

Used by the docs generator (the per-path table in docs/state-machines.md) and by tests, which replay
each sequence through the machine, so the table can never disagree with the graph.
"""

from __future__ import annotations

from collections.abc import Mapping

from orchestrator.events import LineItemType, SubscriptionPath
from orchestrator.machines._registry import MachineRegistry, machine_for
from orchestrator.machines._runtime import MachineModel, Transitioned, initial_state, restore, try_event

_SUBMIT = ("item_added", "order_submitted")

SUBSCRIPTION_HAPPY_PATHS: Mapping[tuple[SubscriptionPath, bool], tuple[str, ...]] = {
    (SubscriptionPath.ASSIGNED, False): (*_SUBMIT, "activate"),
    (SubscriptionPath.ASSIGNED, True): (*_SUBMIT, "activation_deferred", "activate"),
    (SubscriptionPath.LEASED, False): ("lease_confirmed", *_SUBMIT, "activate"),
    (SubscriptionPath.LEASED, True): ("lease_confirmed", *_SUBMIT, "activation_deferred", "activate"),
    (SubscriptionPath.PORT_IN, False): (*_SUBMIT, "port_requested", "activate"),
    (SubscriptionPath.PORT_IN, True): (*_SUBMIT, "port_requested", "activation_deferred", "activate"),
    # The temporary number goes live as soon as possible, whatever the date; the date then only
    # concerns the ported number, whose timing the porting process decides.
    (SubscriptionPath.PORT_IN_WITH_TEMP, False): (
        *_SUBMIT,
        "port_requested",
        "temp_number_activated",
        "activate",
    ),
    (SubscriptionPath.PORT_IN_WITH_TEMP, True): (
        *_SUBMIT,
        "port_requested",
        "temp_number_activated",
        "activate",
    ),
}
"""(path, scheduled) → the events that take a subscription from `received` to `activated`."""


def happy_path_states(
    *, path: SubscriptionPath, scheduled: bool, registry: MachineRegistry | None = None
) -> tuple[str, ...]:
    """The states a subscription passes through on its path, starting with `received`.

    Computed by running the events through the latest subscription machine; raises ValueError if the
    machine refuses one (which would mean the table above and the graph disagree).
    """
    machine_cls = machine_for(LineItemType.SUBSCRIPTION, registry=registry)
    start = initial_state(machine_cls)
    model = MachineModel(state=start)
    machine = restore(
        line_item_type=LineItemType.SUBSCRIPTION,
        definition_version=machine_cls.DEFINITION_VERSION,
        model=model,
        registry=registry,
    )
    states = [start]
    for event in SUBSCRIPTION_HAPPY_PATHS[(path, scheduled)]:
        outcome = try_event(machine, event=event)
        if not isinstance(outcome, Transitioned):
            raise ValueError(f"{path}/{scheduled}: {event} refused in {outcome.state}")
        states.append(outcome.target)
    return tuple(states)
