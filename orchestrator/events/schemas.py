"""Generate (or check) the JSON Schema contract files under `schemas/` from the pydantic models.

    python -m orchestrator.events.schemas --write   # regenerate after changing a model
    python -m orchestrator.events.schemas --check   # CI: exit 1 if a checked-in file is stale

`schemas/asyncapi.json` is hand-written and references these files; it is not generated.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from orchestrator.events._crm import (
    LineItemUpdated,
    LineItemUpdatedEvent,
    OrderCancelled,
    OrderCancelledEvent,
    OrderSubmitted,
    OrderSubmittedEvent,
)
from orchestrator.events._status import (
    LineItemAmendedEvent,
    LineItemJeopardyEvent,
    LineItemStateChangedEvent,
    OrderStateChangedEvent,
)
from orchestrator.events._webhook import ProviderWebhookEvent

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
DEFAULT_DIRECTORY = Path(__file__).resolve().parents[2] / "schemas"

Mode = Literal["validation", "serialization"]

# file name -> (model, mode, title). Inputs are described as we accept them (validation); outputs as
# we produce them (serialization). The `.data.json` files are the binary-mode values.
SCHEMA_FILES: Mapping[str, tuple[type[BaseModel], Mode, str]] = {
    "crm.order.submitted.json": (OrderSubmittedEvent, "validation", "crm.order.submitted (structured)"),
    "crm.order.submitted.data.json": (OrderSubmitted, "validation", "crm.order.submitted data (binary)"),
    "crm.order.line_item.updated.json": (
        LineItemUpdatedEvent,
        "validation",
        "crm.order.line_item.updated (structured)",
    ),
    "crm.order.line_item.updated.data.json": (
        LineItemUpdated,
        "validation",
        "crm.order.line_item.updated data (binary)",
    ),
    "crm.order.cancelled.json": (OrderCancelledEvent, "validation", "crm.order.cancelled (structured)"),
    "crm.order.cancelled.data.json": (OrderCancelled, "validation", "crm.order.cancelled data (binary)"),
    "provisioning.line_item.state_changed.json": (
        LineItemStateChangedEvent,
        "serialization",
        "provisioning.line_item.state_changed",
    ),
    "provisioning.line_item.amended.json": (
        LineItemAmendedEvent,
        "serialization",
        "provisioning.line_item.amended",
    ),
    "provisioning.line_item.jeopardy.json": (
        LineItemJeopardyEvent,
        "serialization",
        "provisioning.line_item.jeopardy",
    ),
    "provisioning.order.state_changed.json": (
        OrderStateChangedEvent,
        "serialization",
        "provisioning.order.state_changed",
    ),
    "connect.webhook.json": (ProviderWebhookEvent, "validation", "Connect webhook envelope"),
}


def render(name: str) -> str:
    """The exact text of one schema file (stable key order, trailing newline)."""
    model, mode, title = SCHEMA_FILES[name]
    schema: dict[str, Any] = {
        "$schema": SCHEMA_DIALECT,
        "$id": name,
        **model.model_json_schema(by_alias=True, mode=mode),
    }
    schema["title"] = title
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def stale_files(directory: Path) -> list[str]:
    """Names of schema files that are missing or differ from what the models generate."""
    stale = []
    for name in SCHEMA_FILES:
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != render(name):
            stale.append(name)
    return stale


def write_all(directory: Path) -> list[str]:
    """Write every schema file; returns the names that changed."""
    changed = stale_files(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name in changed:
        (directory / name).write_text(render(name), encoding="utf-8")
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.events.schemas", description=__doc__)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help="regenerate the schema files")
    action.add_argument("--check", action="store_true", help="exit 1 if a schema file is stale")
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIRECTORY, help="schema directory")
    args = parser.parse_args(argv)
    if args.write:
        changed = write_all(args.dir)
        sys.stdout.write(f"wrote {len(changed)} schema file(s) in {args.dir}\n")
        return 0
    stale = stale_files(args.dir)
    if stale:
        sys.stderr.write(
            f"stale JSON Schema files in {args.dir}: {', '.join(stale)}\n"
            "run: python -m orchestrator.events.schemas --write\n"
        )
        return 1
    sys.stdout.write(f"{len(SCHEMA_FILES)} schema files up to date\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
