"""Provider webhook envelopes (`{eventId, type, occurredAt, data}`), carried on `connect.events.v1`.

Tolerant on purpose: the provider may add event types and fields at any time, and an event we do not
understand must still be acknowledged and carried, never refused at the door.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.events._base import NonEmptyStr, Timestamp


class ProviderWebhookEvent(BaseModel):
    """One Connect webhook delivery; `eventId` is stable across redeliveries (the dedup key)."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True, serialize_by_alias=True)

    event_id: NonEmptyStr = Field(alias="eventId")
    type: NonEmptyStr
    occurred_at: Timestamp = Field(alias="occurredAt")
    data: dict[str, Any] = Field(default_factory=dict)

    def kafka_key(self) -> bytes:
        """Partition key on `connect.events.v1`: the subscription id, else the order id.

        Looks at `data.subscriptionId`, then `data.orderId`, then `data.order.orderId` (the shape of
        `order.lineItemStatusChanged`), then `data.customerId`; falls back to the `eventId` so that
        an unknown event still gets a stable key.
        """
        order = self.data.get("order")
        candidates = (
            self.data.get("subscriptionId"),
            self.data.get("orderId"),
            order.get("orderId") if isinstance(order, dict) else None,
            self.data.get("customerId"),
        )
        for candidate in candidates:
            if isinstance(candidate, str) and candidate:
                return candidate.encode("utf-8")
        return self.event_id.encode("utf-8")
