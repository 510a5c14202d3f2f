"""JSON on the hot path: orjson where it gives the same answer as the stdlib, the stdlib where not.

Every row the engine reads or writes goes through the jsonb codec, and every provider answer
through `loads`: the stdlib's pure-Python glue was a visible share of the worker's CPU (issue
#16). orjson reads an integer past 64 bits as a float and cannot write one; CRM metadata is
free-form, so such values take the stdlib path and come back exactly as they went in.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

# Doubles hold integers exactly up to 2**53 (16 digits): a longer digit run may be such a number
# (or only a long digit string, e.g. an ICCID, which the stdlib reads just as well).
_LONG_DIGITS = re.compile(rb"\d{16,}")


def loads(data: str | bytes) -> Any:
    raw = data.encode() if isinstance(data, str) else data
    if _LONG_DIGITS.search(raw):
        return json.loads(raw)
    return orjson.loads(raw)


def dumps(value: Any) -> str:
    """Compact JSON text (the codec's form: `separators=(",", ":")`)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # an integer past 64 bits
        return json.dumps(value, separators=(",", ":"))
