"""Fixtures for the Kafka edge tests (helpers live in tests/kafka/support.py)."""

from __future__ import annotations

import uuid

import pytest

from orchestrator.localstack import LocalStack


@pytest.fixture
def bootstrap(stack: LocalStack) -> str:
    """The session broker's address."""
    return stack.kafka.bootstrap_servers


@pytest.fixture
def group_id() -> str:
    """A consumer group no other test uses, so committed offsets start empty."""
    return f"group-{uuid.uuid4().hex[:10]}"
