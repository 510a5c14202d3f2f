"""`orchestrator dev` lifts the worker's client-side provider limits to match its own sandbox (which
has none), except those the environment sets."""

from __future__ import annotations

import pytest

from orchestrator.devstack import DEV_LIMITS, dev_connect_settings
from orchestrator.settings import load_settings


def test_dev_lifts_the_default_provider_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in DEV_LIMITS:
        monkeypatch.delenv(f"ORCHESTRATOR_CONNECT__{name.upper()}", raising=False)
    base = load_settings().connect
    assert base.rate_limit_per_s == 50.0  # the production default the dev stack must not apply
    connect = dev_connect_settings(base, base_url="http://127.0.0.1:1234", api_key="sandbox-k")
    assert (connect.rate_limit_per_s, connect.rate_limit_burst, connect.max_concurrency) == (
        DEV_LIMITS["rate_limit_per_s"],
        DEV_LIMITS["rate_limit_burst"],
        DEV_LIMITS["max_concurrency"],
    )
    assert connect.base_url == "http://127.0.0.1:1234"
    assert connect.api_key.get_secret_value() == "sandbox-k"
    client = connect.to_config()
    assert client.rate_limit_per_s >= 10_000
    assert client.rate_limit_burst >= 1_000


def test_dev_keeps_limits_the_environment_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRATOR_CONNECT__RATE_LIMIT_PER_S", "20")
    monkeypatch.delenv("ORCHESTRATOR_CONNECT__RATE_LIMIT_BURST", raising=False)
    monkeypatch.delenv("ORCHESTRATOR_CONNECT__MAX_CONCURRENCY", raising=False)
    connect = dev_connect_settings(load_settings().connect, base_url="http://127.0.0.1:1", api_key="k")
    assert connect.rate_limit_per_s == 20.0  # set explicitly: kept
    assert connect.rate_limit_burst == DEV_LIMITS["rate_limit_burst"]  # not set: lifted
    assert connect.max_concurrency == DEV_LIMITS["max_concurrency"]
