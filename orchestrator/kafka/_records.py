"""The record a handler sees: plain, immutable, independent of aiokafka's types."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ConsumedRecord:
    """One Kafka record as consumed. Headers keep their order and duplicates, as on the wire."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int

    @classmethod
    def from_aiokafka(cls, record: Any) -> ConsumedRecord:
        """Copy an aiokafka ConsumerRecord (untyped upstream, hence `Any`)."""
        return cls(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            headers=tuple((str(name), bytes(value or b"")) for name, value in (record.headers or ())),
            timestamp_ms=record.timestamp,
        )

    def header(self, name: str) -> bytes | None:
        """The last value of header `name`, or None."""
        for header_name, value in reversed(self.headers):
            if header_name == name:
                return value
        return None
