"""Idempotency keys within the provider's limit, and stored paths read back into their ids."""

from __future__ import annotations

import hashlib
from urllib.parse import unquote

__all__ = ["MAX_IDEMPOTENCY_KEY_LENGTH", "bounded_key", "parse_path"]

MAX_IDEMPOTENCY_KEY_LENGTH = 256

_DIGEST_CHARS = 64  # sha256, hex
_SEPARATOR = "~"
_PREFIX_CHARS = MAX_IDEMPOTENCY_KEY_LENGTH - len(_SEPARATOR) - _DIGEST_CHARS


def bounded_key(key: str) -> str:
    """`key` itself when the provider accepts its length, else its first characters, `~` and the
    sha256 of the whole key: at most 256 characters either way.

    Keys already stored and sent must never change, so a key within the limit is returned as it
    is; a longer one maps to the same short key on every retry and after every restart, and two
    long keys that differ anywhere (an order id past the prefix) map to different ones. The prefix
    keeps the key readable in the provider's logs and ours. `bounded_key(bounded_key(k))` is
    `bounded_key(k)`, so callers may apply it at more than one layer.
    """
    if len(key) <= MAX_IDEMPOTENCY_KEY_LENGTH:
        return key
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{key[:_PREFIX_CHARS]}{_SEPARATOR}{digest}"


def parse_path(path: str) -> tuple[str, ...]:
    """The segments of a request path, each unescaped: `/orders/a%2Fb/line-items/x` gives
    `("orders", "a/b", "line-items", "x")`, so the ids of a stored call can be read back exactly as
    they were before `Requests` escaped them.

    Paths stored before ids were escaped split at any `/` inside an id; their provider ids (the
    second segment) never contain one, since the provider mints them.
    """
    return tuple(unquote(segment) for segment in path.strip("/").split("/"))
