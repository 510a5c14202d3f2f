"""The Kafka edge of the engine: consuming with commits only after the effect is durable, dead
lettering, and relaying the transactional outbox. Other packages import only from here.

- `EventConsumer` — consumer group over topics; per-partition order; at-least-once; DLQ routing.
- `DeadLetter` — raised by a handler to send its record to the DLQ with a reason.
- `DeadLetterPublisher` — the original record plus `dlq_*` headers, acked by the broker.
- `IdempotentProducer` — a lazily (re)started idempotent producer with bounded waits for acks.
- `OutboxRelay` — every worker's publishes `outbox` rows (row locks, SKIP LOCKED), in order per key.
"""

from orchestrator.kafka._consumer import ConsumerCounters, EventConsumer, Handler, RetryPolicy
from orchestrator.kafka._dlq import DeadLetterPublisher, dead_letter_headers
from orchestrator.kafka._errors import DeadLetter, KafkaEdgeError, LifecycleError
from orchestrator.kafka._lifecycle import State
from orchestrator.kafka._producer import IdempotentProducer
from orchestrator.kafka._records import ConsumedRecord
from orchestrator.kafka._relay import OutboxRelay

# Moved to orchestrator.store; re-exported only until admin/_metrics.py imports it from there
# (issue #13). Do not add importers.
from orchestrator.store import outbox_lag

__all__ = [
    "ConsumedRecord",
    "ConsumerCounters",
    "DeadLetter",
    "DeadLetterPublisher",
    "EventConsumer",
    "Handler",
    "IdempotentProducer",
    "KafkaEdgeError",
    "LifecycleError",
    "OutboxRelay",
    "RetryPolicy",
    "State",
    "dead_letter_headers",
    "outbox_lag",
]
