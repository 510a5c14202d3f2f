"""Keeping porting credentials and other secrets out of logs, events and the ops console.

Two layers: secret fields are `SecretStr` (so `repr`, `str` and a plain JSON dump show `**********`),
and `redact()` masks whole subtrees by key name for anything that is logged, stored for display or
put in an event. Only `line_item_payload(..., reveal_secrets=True)` (in `_line_items`) gives the real
values back, for the provider request and the workflow's own row.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, SecretStr, SerializationInfo

REDACTED = "[REDACTED]"
"""What a masked value is replaced with."""

REVEAL_SECRETS_CONTEXT = "reveal_secrets"
"""Serialisation context key that makes secret fields dump their real value."""

# Compared after lower-casing and dropping "-" and "_": "accountNumber", "account_number", "X-Api-Key".
_SENSITIVE_KEYS = frozenset(
    {
        "porting",  # the whole porting object: credentials plus the old owner's name and address
        "accountnumber",
        "passcode",
        "password",
        "pin",
        "puk",
        "puk1",
        "puk2",
        "apikey",
        "xapikey",
        "authorization",
        "secret",
        "clientsecret",
    }
)


def is_sensitive_key(key: str) -> bool:
    """True if a mapping value under `key` must never be shown."""
    return key.lower().replace("-", "").replace("_", "") in _SENSITIVE_KEYS


def reveals_secrets(info: SerializationInfo) -> bool:
    """True if the caller asked a model dump for the real secret values (see `line_item_payload`)."""
    context = info.context
    return isinstance(context, Mapping) and context.get(REVEAL_SECRETS_CONTEXT) is True


def redact(obj: object) -> Any:
    """A JSON-compatible copy of `obj` that is safe to log, display or publish.

    Models are dumped in JSON mode (their `SecretStr` fields come out masked), then every value under
    a sensitive key (`porting`, `passcode`, `accountNumber`, `apiKey`, ...) is replaced by `[REDACTED]`,
    at any depth. Plain values pass through; unknown objects become their `repr`.
    """
    if isinstance(obj, BaseModel):
        return redact(obj.model_dump(mode="json", by_alias=True))
    if isinstance(obj, SecretStr):
        return REDACTED
    if isinstance(obj, Mapping):
        return {
            str(key): (REDACTED if is_sensitive_key(str(key)) else redact(value))
            for key, value in obj.items()
        }
    if isinstance(obj, list | tuple | set | frozenset):
        return [redact(item) for item in obj]
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    return repr(obj)
