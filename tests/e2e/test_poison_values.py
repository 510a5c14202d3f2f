"""Values the event models accept but Postgres cannot hold (a NUL character in text or jsonb, a lone
surrogate, a number beyond a double) fail the same way on every attempt. Each such event must go
to the DLQ with its reason, and the orders behind it on the same partition must still be
provisioned (issue #14: no poison pill)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

from orchestrator.settings import Settings
from orchestrator.worker import Worker
from tests.e2e.support import (
    StatusEvents,
    TopicReader,
    crm_event,
    order_submitted,
    porting,
    publish,
    subscription,
)

KEY = "o-poison"  # every event below shares this key, hence one partition, in publish order


def _full_order() -> dict[str, Any]:
    """An order with a text value in every kind of field the CRM sends."""
    data = order_submitted(
        KEY,
        subscription("li-port", msisdn="+15551230001", porting=porting(), tempNumber=True),
        subscription("li-plain", scheduleActivationAt="2030-01-01"),
    )
    data["customer"] = {"customerId": "cust-7"}
    data["metadata"] = {"channel": "web", "campaign": "winter"}
    return data


def _text_paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _text_paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _text_paths(item, (*path, index))
    elif isinstance(value, str):
        yield path


def _with_nul(data: dict[str, Any], path: tuple[Any, ...]) -> dict[str, Any]:
    poisoned = copy.deepcopy(data)
    target: Any = poisoned
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = target[path[-1]][:3] + "\x00" + target[path[-1]][3:]
    return poisoned


async def test_a_nul_in_any_text_field_is_dead_lettered_and_the_partition_moves_on(
    settings: Settings, worker: Worker, status: StatusEvents, dlq: TopicReader
) -> None:
    order = _full_order()
    # The order id itself must also be the key and subject; a NUL there is tried on its own below.
    paths = [p for p in _text_paths(order) if p != ("orderId",)]
    assert len(paths) >= 15, paths
    poisoned = [crm_event("crm.order.submitted", _with_nul(order, p)) for p in paths]
    # Values that other layers let through as well: a lone surrogate and a number beyond a double.
    for odd in ("\ud800", float("inf")):
        poisoned.append(crm_event("crm.order.submitted", {**order, "metadata": {"channel": odd}}))
    nul_id = KEY + "\x00x"
    poisoned.append(crm_event("crm.order.submitted", order_submitted(nul_id, subscription("li-1"))))
    for value in poisoned[:-1]:
        await publish(settings, KEY, value)
    await publish(settings, nul_id, poisoned[-1])
    await publish(
        settings, KEY, crm_event("crm.order.submitted", order_submitted(KEY, subscription("li-ok")))
    )

    await dlq.wait_for(lambda: len(dlq.records) >= len(poisoned), timeout_s=60, what="every poisoned event")
    await status.until_settled(KEY, 1, timeout_s=60)
    assert status.states(KEY, "li-ok")[-1] == "activated"
    assert sorted(r.value for r in dlq.records) == sorted(poisoned), "each poisoned event, untouched"
    reasons = {dict(r.headers)["dlq_reason"].decode() for r in dlq.records}
    expected = {
        "invalid_data",
        "unknown_line_item_type",
        "malformed_json",
        "key_mismatch",
        "subject_mismatch",
    }
    assert reasons <= expected, reasons
    for record in dlq.records:
        assert dict(record.headers)["dlq_error"], record.value
    # Nothing of the poisoned orders was written: the only order is the clean one.
    assert [json.loads(r.value)["data"]["orderId"] for r in dlq.records].count(KEY) == len(paths) + 2
