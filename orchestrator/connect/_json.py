"""Deterministic request bodies.

The provider compares a retried request with the first one byte for byte, so the bytes must depend
only on the logical request: sorted keys, compact separators, UTF-8, no send-time values. The engine
stores these bytes with the step's intent and re-sends exactly them; nothing re-serialises later.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from pydantic import BaseModel

__all__ = ["canonical_json", "to_jsonable"]


def to_jsonable(obj: Any) -> Any:  # noqa: PLR0911 - one return per JSON kind reads clearest
    """Plain JSON values for `obj`; pydantic models are dumped by alias without unset `None`s."""
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json", by_alias=True, exclude_none=True)
    if isinstance(obj, Enum):
        return to_jsonable(obj.value)
    if isinstance(obj, Mapping):
        return {str(key): to_jsonable(value) for key, value in obj.items()}
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, (bytes, bytearray)):
        raise TypeError("bytes in a request body; decode them first")
    if isinstance(obj, Sequence):
        return [to_jsonable(item) for item in obj]
    if isinstance(obj, datetime):
        # A naive datetime would silently mean "server local time" on the other side.
        if obj.tzinfo is None:
            raise TypeError("naive datetime in a request body; use an aware UTC datetime")
        return obj.isoformat()
    if isinstance(obj, date):
        return obj.isoformat()
    if isinstance(obj, Decimal):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} into a Connect request body")


def canonical_json(obj: Any) -> bytes:
    """The exact bytes to send for `obj`: equal logical requests always give equal bytes."""
    return json.dumps(
        to_jsonable(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")
