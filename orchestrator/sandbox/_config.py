"""Start-up configuration of the sandbox. Everything that can change at run time lives in the
scenario (see _scenario.py) and is set through `/_sandbox/...`."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class SandboxConfig(BaseModel):
    """How a sandbox instance starts. Durations are in sandbox-clock seconds unless named `_real_`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    api_key: str = Field(min_length=1, description="the X-API-Key callers must present")
    extra_api_keys: tuple[str, ...] = Field((), description="more accepted keys (idempotency is per key)")
    webhook_url: str | None = Field(None, description="where events are POSTed; None keeps them local")
    webhook_secret: str | None = Field(None, description="sent as X-Api-Key on every delivery")
    seed: int = Field(0, description="ids, numbers and fault dice all derive from it")
    start_at: datetime | None = Field(None, description="sandbox clock start (aware); None = real now")
    clock_speed: float = Field(
        1.0, ge=0, description="sandbox seconds per real second; 0 freezes the clock (tests advance it)"
    )
    order_step_s: float = Field(0.2, ge=0, description="SUBMITTED→PROCESSING and PROCESSING→COMPLETED")
    port_step_s: float = Field(1.0, ge=0, description="PENDING→IN_PROGRESS→SCHEDULED for a port-in")
    port_delay_s: float = Field(3.0, ge=0, description="SCHEDULED→outcome unless a number overrides it")
    lease_ttl_s: float = Field(3600.0, gt=0)
    idempotency_ttl_s: float = Field(86400.0, gt=0)
    order_ttl_s: float = Field(7 * 86400.0, gt=0, description="an unsubmitted order EXPIRES after this")
    number_prefix: str = Field("+4670", pattern=r"^\+\d{1,6}$")
    webhook_timeout_real_s: float = Field(5.0, gt=0)
    webhook_retry_base_real_s: float = Field(0.1, gt=0)
    webhook_retry_max_real_s: float = Field(30.0, gt=0)
    webhook_max_attempts: int = Field(30, ge=1)
    ledger_max_entries: int = Field(200_000, ge=100, description="oldest entries drop beyond this")

    def accepted_keys(self) -> frozenset[str]:
        return frozenset((self.api_key, *self.extra_api_keys))
