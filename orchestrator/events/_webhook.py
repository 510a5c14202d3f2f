"""Provider webhook envelopes (`{eventId, type, occurredAt, data}`), carried on `connect.events.v1`.

One model for both ends of the topic: the webhook ingress validates each delivery with it (and
keys the record with `kafka_key`) before it answers 2xx, and the engine reads the records with it.
An envelope one end accepts the other therefore accepts too: nothing is acknowledged to the
provider only to be dead-lettered behind the ingress.

Tolerant of what we do not know on purpose: the provider may add event types and fields at any
time, and an event we do not understand must still be acknowledged and carried.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.events._base import NonEmptyStr, Timestamp


class ProviderWebhookEvent(BaseModel):
    """One Connect webhook delivery; `eventId` is stable across redeliveries (the dedup key)."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True, serialize_by_alias=True)

    # Bounded: the engine keeps each eventId in the inbox's primary key.
    event_id: NonEmptyStr = Field(alias="eventId")
    type: NonEmptyStr
    occurred_at: Timestamp = Field(alias="occurredAt")
    data: dict[str, Any]

    def kafka_key(self) -> bytes:
        """Partition key on `connect.events.v1`: `data.subscriptionId`, else `data.orderId`, else
        `data.order.orderId` (the shape of `order.lineItemStatusChanged`), else the `eventId`.

        An order's or a subscription's events stay on one partition, in order; an event about
        neither still gets a key that is stable across its redeliveries.
        """
        order = self.data.get("order")
        for candidate in (
            self.data.get("subscriptionId"),
            self.data.get("orderId"),
            order.get("orderId") if isinstance(order, dict) else None,
        ):
            if isinstance(candidate, str) and candidate:
                return candidate.encode("utf-8")
        return self.event_id.encode("utf-8")
