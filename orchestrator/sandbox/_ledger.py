"""Every request received and every effect applied, so tests can assert "each effect exactly once".

Entries are plain dicts (they are served as JSON as they are):
  request: {seq, at, kind: "request", apiKey, method, path, idempotencyKey, status, outcome}
  effect:  {seq, at, kind: "effect", effect, entityId, idempotencyKey, data}
`outcome` of a request is processed | replayed | locked | mismatch | unauthorized | rate_limited |
client_gone (the body never fully arrived: not processed) | fault:<kind>.
`apiKey` is shown as its last four characters only.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from datetime import datetime
from typing import Any

from orchestrator.sandbox._clock import iso

# The idempotency key of the request being processed, so effects deep in the world can record it.
current_idempotency_key: ContextVar[str | None] = ContextVar("sandbox_idempotency_key", default=None)


def mask_key(api_key: str) -> str:
    return "…" + api_key[-4:]


class Ledger:
    def __init__(self, *, now: Callable[[], datetime], max_entries: int) -> None:
        self._now = now
        self._entries: deque[dict[str, Any]] = deque(maxlen=max_entries)
        self._seq = itertools.count(1)

    def request(
        self, *, api_key: str, method: str, path: str, idempotency_key: str | None, status: int, outcome: str
    ) -> None:
        self._entries.append(
            {
                "seq": next(self._seq),
                "at": iso(self._now()),
                "kind": "request",
                "apiKey": mask_key(api_key),
                "method": method,
                "path": path,
                "idempotencyKey": idempotency_key,
                "status": status,
                "outcome": outcome,
            }
        )

    def effect(self, effect: str, entity_id: str, *, at: datetime | None = None, **data: Any) -> None:
        self._entries.append(
            {
                "seq": next(self._seq),
                "at": iso(at or self._now()),
                "kind": "effect",
                "effect": effect,
                "entityId": entity_id,
                "idempotencyKey": current_idempotency_key.get(),
                "data": data,
            }
        )

    def entries(
        self, *, kind: str | None = None, effect: str | None = None, after_seq: int = 0
    ) -> Iterable[dict[str, Any]]:
        for entry in self._entries:
            if entry["seq"] <= after_seq:
                continue
            if kind is not None and entry["kind"] != kind:
                continue
            if effect is not None and entry.get("effect") != effect:
                continue
            yield entry
