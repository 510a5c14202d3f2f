"""`SandboxControl`: a small async client for `/_sandbox/...`, for tests and demos."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

import httpx


class SandboxControl:
    """Drive a running sandbox: clock, scenario, faults, ledger. Raises httpx.HTTPStatusError on a
    refused control call (these are test-setup mistakes, not provider behaviour)."""

    def __init__(self, *, base_url: str, api_key: str) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, headers={"X-API-Key": api_key}, timeout=10.0)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _call(
        self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None
    ) -> Any:
        answer = await self._http.request(method, f"/_sandbox{path}", json=body, params=params)
        answer.raise_for_status()
        return answer.json()

    async def advance(self, seconds: float) -> str:
        """Move the sandbox clock forward and run everything that became due; returns the new now."""
        return str((await self._call("POST", "/clock/advance", {"seconds": seconds}))["now"])

    async def set_speed(self, speed: float) -> None:
        await self._call("POST", "/clock/advance", {"speed": speed})

    async def now(self) -> str:
        return str((await self._call("GET", "/clock"))["now"])

    async def scenario(self, **changes: Any) -> dict[str, Any]:
        """Change scenario switches, e.g. `scenario(leaseAvailable=False)`."""
        result: dict[str, Any] = await self._call("POST", "/scenario", changes)
        return result

    async def port_plan(self, msisdn: str, *, outcome: str, delay_s: float | None = None) -> None:
        await self._call("PUT", f"/porting/{msisdn}", {"outcome": outcome, "delayS": delay_s})

    async def faults(self, *rules: dict[str, Any]) -> None:
        """Replace the fault rules (see docs/connect-sandbox.md for their fields)."""
        await self._call("PUT", "/faults", {"rules": list(rules)})

    async def ledger(self, *, kind: str | None = None, effect: str | None = None) -> list[dict[str, Any]]:
        params = {k: v for k, v in (("kind", kind), ("effect", effect)) if v is not None}
        entries: list[dict[str, Any]] = (await self._call("GET", "/ledger", params=params))["entries"]
        return entries

    async def events(self, *, event_type: str | None = None) -> list[dict[str, Any]]:
        params = {"type": event_type} if event_type else None
        events: list[dict[str, Any]] = (await self._call("GET", "/events", params=params))["events"]
        return events

    async def entities(self) -> dict[str, list[dict[str, Any]]]:
        """The provider's orders, subscriptions, licenses, add-ons and ports as they are now."""
        result: dict[str, list[dict[str, Any]]] = await self._call("GET", "/entities")
        return result

    async def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "/stats")
        return result

    async def reset(self) -> None:
        await self._call("POST", "/reset")
