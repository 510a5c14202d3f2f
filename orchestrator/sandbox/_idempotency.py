"""The provider's idempotency rules, per API key:

- first request with a key: processed, the complete response cached for `ttl` (sandbox clock);
- identical retry (method, path+query, body bytes, Content-Type): the cached response, replayed;
- identical request while the first is still running: 409 idempotency_key_locked;
- same key, anything different: 409 idempotency_key_mismatch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta


@dataclass(slots=True)
class CachedResponse:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


@dataclass(slots=True)
class Entry:
    fingerprint: str
    created: datetime
    response: CachedResponse | None = field(default=None)  # None while the first request runs


def fingerprint(*, method: str, target: str, content_type: str, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (method.encode(), target.encode(), content_type.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


class IdempotencyStore:
    _SWEEP_EVERY = 1024

    def __init__(self, *, now: Callable[[], datetime], ttl_s: float) -> None:
        self._now = now
        self._ttl = timedelta(seconds=ttl_s)
        self._entries: dict[tuple[str, str], Entry] = {}
        self._inserts = 0

    def lookup(self, api_key: str, key: str) -> Entry | None:
        entry = self._entries.get((api_key, key))
        if entry is not None and self._now() - entry.created >= self._ttl:
            del self._entries[(api_key, key)]
            return None
        return entry

    def begin(self, api_key: str, key: str, fp: str) -> Entry:
        entry = Entry(fingerprint=fp, created=self._now())
        self._entries[(api_key, key)] = entry
        self._inserts += 1
        if self._inserts % self._SWEEP_EVERY == 0:
            self._sweep()
        return entry

    def abandon(self, api_key: str, key: str) -> None:
        self._entries.pop((api_key, key), None)

    def _sweep(self) -> None:
        now = self._now()
        expired = [k for k, e in self._entries.items() if now - e.created >= self._ttl and e.response]
        for k in expired:
            del self._entries[k]

    def __len__(self) -> int:
        return len(self._entries)
