"""Bad configuration fails at start-up with a message naming the setting and a non-zero exit."""

from __future__ import annotations

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.errors import ConfigError
from orchestrator.settings import KafkaSettings, Settings, WebhookSettings, load_settings, settings_env

runner = CliRunner()


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("ORCHESTRATOR_KAFKA__BOOTSTRAP_SERVERS", "no-port-here", "expected host:port"),
        ("ORCHESTRATOR_DATABASE__URL", "mysql://x", "must start with postgresql://"),
        ("ORCHESTRATOR_ADMIN__PORT", "70000", "less than or equal to 65535"),
        ("ORCHESTRATOR_CONNECT__BASE_URL", "ftp://provider", "must start with http"),
        ("ORCHESTRATOR_LOG_LEVEL", "LOUD", "should match pattern"),
    ],
)
def test_bad_setting_is_named_and_exits_2(variable: str, value: str, expected: str) -> None:
    result = runner.invoke(app, ["migrate"], env={variable: value})
    assert result.exit_code == 2
    assert variable in result.stderr
    assert expected in result.stderr


def test_secrets_never_appear_in_settings_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRATOR_CONNECT__API_KEY", "very-secret-key")
    monkeypatch.setenv("ORCHESTRATOR_DATABASE__URL", "postgresql://u:db-password@h:5432/d")
    settings = load_settings()
    assert settings.connect.api_key.get_secret_value() == "very-secret-key"
    rendered = repr(settings) + str(settings) + settings.model_dump_json()
    assert "very-secret-key" not in rendered
    assert "db-password" not in rendered


def test_defaults_load_without_any_environment() -> None:
    settings = load_settings()
    assert settings.kafka.orders_topic == "crm.orders.v1"
    assert settings.kafka.status_topic == "provisioning.status.v1"


def test_unknown_nested_field_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRATOR_KAFKA__BOOTSTRAP_SERVRES", "typo:9092")
    with pytest.raises(ConfigError, match="ORCHESTRATOR_KAFKA__BOOTSTRAP_SERVRES"):
        load_settings()


def test_unreachable_database_is_a_clear_error() -> None:
    result = runner.invoke(app, ["migrate", "--database-url", "postgresql://postgres@127.0.0.1:1/nothing"])
    assert result.exit_code == 1
    assert "cannot connect to the database" in result.stderr


def test_settings_survive_the_trip_through_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """How a parent hands its exact configuration to an `orchestrator run` child process."""
    original = Settings(
        kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1234", orders_topic="orders.x"),
        webhook=WebhookSettings(port=9999, api_key=SecretStr("hook-secret")),
        log_json=False,
    )
    for name, value in settings_env(original).items():
        monkeypatch.setenv(name, value)
    assert load_settings() == original
