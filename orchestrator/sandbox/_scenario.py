"""Run-time switches a test or a CRM team flips through `/_sandbox/scenario` and `/_sandbox/porting`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

PortOutcome = Literal["COMPLETED", "FAILED", "STUCK"]


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class PortPlan(_Camel):
    """What happens to a port-in of one number: its outcome and SCHEDULED→outcome delay."""

    outcome: PortOutcome = "COMPLETED"
    delay_s: float | None = Field(None, ge=0, description="sandbox seconds; None = config.port_delay_s")


class RateLimit(_Camel):
    per_s: float = Field(gt=0)
    burst: int = Field(1, ge=1)


class Scenario(_Camel):
    lease_available: bool = True
    pool_size: int | None = Field(
        None, ge=0, description="numbers that may be leased in total; None = no cap"
    )
    default_port: PortPlan = PortPlan()
    ports: dict[str, PortPlan] = Field(default_factory=dict)
    rate_limit: RateLimit | None = None
    webhook_url: str | None = None
    webhook_secret: str | None = None
    webhook_duplicate_probability: float = Field(0.0, ge=0, le=1)
    webhook_reorder_max_delay_s: float = Field(0.0, ge=0, description="real seconds of random extra delay")
    create_subscription_enabled: bool = True
    activation_late: bool = Field(
        False, description="scheduled activations miss their date; off again: they happen on the next tick"
    )

    def port_plan(self, msisdn: str) -> PortPlan:
        return self.ports.get(msisdn, self.default_port)


class ScenarioPatch(_Camel):
    """Fields to change; absent fields stay as they are."""

    lease_available: bool | None = None
    pool_size: int | None = Field(None, ge=0)
    default_port: PortPlan | None = None
    rate_limit: RateLimit | None = None
    clear_rate_limit: bool = False
    webhook_url: str | None = None
    webhook_secret: str | None = None
    webhook_duplicate_probability: float | None = Field(None, ge=0, le=1)
    webhook_reorder_max_delay_s: float | None = Field(None, ge=0)
    create_subscription_enabled: bool | None = None
    activation_late: bool | None = None

    def apply(self, scenario: Scenario) -> Scenario:
        data = scenario.model_dump()
        data.update(self.model_dump(exclude_unset=True, exclude={"clear_rate_limit"}))
        if self.clear_rate_limit:
            data["rate_limit"] = None
        return Scenario.model_validate(data)
