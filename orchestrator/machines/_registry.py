"""Which machine class runs a line item: keyed by (line item type, definition version).

Every workflow row stores the definition version it was created under. A deploy that changes a graph
adds a new version and keeps the old class registered, so a row that has waited a month for its
activation date still loads with the graph it started with.
"""

from __future__ import annotations

from collections.abc import Iterable

from orchestrator.events import LineItemType
from orchestrator.machines._errors import UnknownDefinitionError
from orchestrator.machines._generic import ActivationItemMachineV1, OneOffItemMachineV1
from orchestrator.machines._subscription import SubscriptionMachineV1
from orchestrator.machines._versioned import VersionedMachine

MachineClass = type[VersionedMachine]


def definition_version(machine: MachineClass) -> int:
    """The `DEFINITION_VERSION` a machine class declares (a positive or zero int)."""
    version = getattr(machine, "DEFINITION_VERSION", None)
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise UnknownDefinitionError(f"{machine.__name__} has no valid DEFINITION_VERSION (int >= 0)")
    return version


class MachineRegistry:
    """(line item type, definition version) → machine class."""

    def __init__(self) -> None:
        self._machines: dict[tuple[LineItemType, int], MachineClass] = {}

    def register(self, machine: MachineClass, *, line_item_types: Iterable[LineItemType | str]) -> None:
        """Add `machine` under its DEFINITION_VERSION for each type; a clash is a bug and raises."""
        version = definition_version(machine)
        for raw_type in line_item_types:
            item_type = _line_item_type(raw_type)
            existing = self._machines.get((item_type, version))
            if existing is not None and existing is not machine:
                raise UnknownDefinitionError(
                    f"{item_type} v{version} is already {existing.__name__}; "
                    f"cannot also be {machine.__name__}"
                )
            self._machines[(item_type, version)] = machine

    def versions(self, line_item_type: LineItemType | str) -> list[int]:
        """Registered definition versions for a type, ascending."""
        item_type = _line_item_type(line_item_type)
        return sorted(version for (registered, version) in self._machines if registered is item_type)

    def get(self, line_item_type: LineItemType | str, version: int | None = None) -> MachineClass:
        """The machine for a type at `version` (None: the latest, for new workflows)."""
        item_type = _line_item_type(line_item_type)
        known = self.versions(item_type)
        if not known:
            raise UnknownDefinitionError(f"no state machine registered for line item type {item_type}")
        chosen = known[-1] if version is None else version
        machine = self._machines.get((item_type, chosen))
        if machine is None:
            raise UnknownDefinitionError(
                f"no {item_type} state machine with definition version {chosen!r}; "
                f"known versions: {', '.join(str(v) for v in known)}",
                line_item_type=item_type.value,
                definition_version=chosen,
            )
        return machine

    def copy(self) -> MachineRegistry:
        """An independent copy (tests register extra definitions without touching the default)."""
        clone = MachineRegistry()
        clone._machines = dict(self._machines)
        return clone


def _line_item_type(raw: LineItemType | str) -> LineItemType:
    try:
        return LineItemType(raw)
    except ValueError:
        raise UnknownDefinitionError(f"unknown line item type {raw!r}") from None


ACTIVATION_ITEM_TYPES = (
    LineItemType.LICENSE,
    LineItemType.ADD_ON,
    LineItemType.SUBSCRIPTION_CHANGE,
    LineItemType.LICENSE_CHANGE,
    LineItemType.ADD_ON_CHANGE,
)
ONE_OFF_ITEM_TYPES = (LineItemType.TOP_UP, LineItemType.EXTERNAL_PRODUCT, LineItemType.EXTERNAL_ITEM)


def _default_registry() -> MachineRegistry:
    registry = MachineRegistry()
    registry.register(SubscriptionMachineV1, line_item_types=[LineItemType.SUBSCRIPTION])
    registry.register(ActivationItemMachineV1, line_item_types=ACTIVATION_ITEM_TYPES)
    registry.register(OneOffItemMachineV1, line_item_types=ONE_OFF_ITEM_TYPES)
    return registry


DEFAULT_REGISTRY = _default_registry()
"""The machines this build knows. Keep every version that a stored row may still reference."""


def machine_for(
    line_item_type: LineItemType | str, version: int | None = None, *, registry: MachineRegistry | None = None
) -> MachineClass:
    """The machine class for a line item type; `version=None` means the latest (new workflows)."""
    return (registry or DEFAULT_REGISTRY).get(line_item_type, version)
