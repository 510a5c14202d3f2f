"""All configuration, parsed once at start-up from `ORCHESTRATOR_*` environment variables.

Nested groups use `__` as the delimiter: `ORCHESTRATOR_KAFKA__BOOTSTRAP_SERVERS`,
`ORCHESTRATOR_CONNECT__API_KEY`. Nothing below the CLI reads the environment; components get the
frozen group they need as a keyword argument. The README's configuration table lists every field.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from orchestrator.errors import ConfigError
from orchestrator.faults import parse_spec

if TYPE_CHECKING:
    from orchestrator.connect import ConnectConfig

ENV_PREFIX = "ORCHESTRATOR_"
ENV_DELIMITER = "__"

Port = Annotated[int, Field(ge=0, le=65535)]
PositiveSeconds = Annotated[float, Field(gt=0)]


class _Group(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Group):
    bootstrap_servers: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, comma separated")
    orders_topic: str = Field("crm.orders.v1", description="CRM order events (consumed)")
    orders_dlq_topic: str = Field("crm.orders.v1.dlq", description="invalid CRM events, with the reason")
    status_topic: str = Field("provisioning.status.v1", description="provisioning status events (produced)")
    connect_events_topic: str = Field("connect.events.v1", description="provider webhooks, carried on Kafka")
    connect_events_dlq_topic: str = Field(
        "connect.events.v1.dlq", description="provider events the engine cannot read, with the reason"
    )
    consumer_group: str = Field("provisioning-orchestrator", description="consumer group of the workers")
    client_id: str = Field("provisioning-orchestrator", description="Kafka client id prefix")

    @field_validator("bootstrap_servers")
    @classmethod
    def _host_port_list(cls, value: str) -> str:
        for part in value.split(","):
            host, sep, port = part.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port...], got {part.strip()!r}")
        return value


class DatabaseSettings(_Group):
    url: SecretStr = Field(
        SecretStr("postgresql://postgres@127.0.0.1:5432/orchestrator"),
        description="PostgreSQL URL (asyncpg form); may carry a password, so it is a secret",
    )
    pool_min_size: int = Field(1, ge=0, description="connections kept open per process")
    pool_max_size: int = Field(10, ge=1, description="connections per process at most")

    @field_validator("url")
    @classmethod
    def _postgres_scheme(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith(("postgresql://", "postgres://")):
            raise ValueError("must start with postgresql:// or postgres://")
        return value


class ConnectSettings(_Group):
    base_url: str = Field("http://127.0.0.1:8081", description="Connect API base URL (no trailing path)")
    api_key: SecretStr = Field(SecretStr("sandbox-key"), description="X-API-Key; never logged")
    connect_timeout_s: PositiveSeconds = Field(2.0, description="TCP/TLS connect timeout per call")
    read_timeout_s: PositiveSeconds = Field(10.0, description="wait for response bytes per call")
    total_timeout_s: PositiveSeconds = Field(
        15.0, description="hard ceiling per call: a hung call never hangs a step"
    )
    max_concurrency: int = Field(16, ge=1, description="in-flight calls per API key")
    rate_limit_per_s: float = Field(50.0, gt=0, description="calls per second per API key")
    rate_limit_burst: int = Field(
        10, ge=1, description="calls that may start at once before the per-second rate applies"
    )
    keepalive_expiry_s: PositiveSeconds = Field(
        30.0, description="idle keep-alive connections are closed after this; below the provider's idle cut"
    )
    max_retry_after_s: PositiveSeconds = Field(
        300.0, description="a Retry-After longer than this is capped, so one bad header cannot park a call"
    )

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    def to_config(self) -> ConnectConfig:
        """The client's own configuration: `connect` does not depend on how settings are read."""
        # Imported here: the CLI reads settings for every command, most of which never call out.
        from orchestrator.connect import ConnectConfig  # noqa: PLC0415

        return ConnectConfig(
            base_url=self.base_url,
            api_key=self.api_key.get_secret_value(),
            connect_timeout_s=self.connect_timeout_s,
            read_timeout_s=self.read_timeout_s,
            total_timeout_s=self.total_timeout_s,
            max_concurrency=self.max_concurrency,
            rate_limit_per_s=self.rate_limit_per_s,
            rate_limit_burst=self.rate_limit_burst,
            keepalive_expiry_s=self.keepalive_expiry_s,
            max_retry_after_s=self.max_retry_after_s,
        )


class WebhookSettings(_Group):
    host: str = Field("127.0.0.1", description="interface the webhook ingress binds")
    port: Port = Field(8082, description="port of the webhook ingress")
    api_key: SecretStr | None = Field(
        None, description="X-Api-Key the provider's deliveries must carry; unset disables the ingress"
    )


class EngineSettings(_Group):
    step_concurrency: int = Field(
        16,
        ge=1,
        le=1024,
        description="steps one worker runs at once; a slot waits out each provider call, so raise it "
        "(and the Connect concurrency) when calls are slow (docs/benchmarks.md)",
    )
    lease_safety_margin_s: float = Field(
        300.0,
        ge=0,
        description="a pool number's lease that lapses within this many seconds counts as lapsed before "
        "submit (the item fails clearly and leaves the cart; its siblings go on); never applied while "
        "the order's submit is on its way",
    )


class OutboxSettings(_Group):
    poll_interval_s: PositiveSeconds = Field(
        0.25,
        description="how often an idle outbox relay looks for status events it was not woken for "
        "(written by another worker or an operator command); a worker wakes its own relay at once",
    )


class JeopardySettings(_Group):
    port_stuck_after_s: PositiveSeconds = Field(
        172800.0,
        description="a port in progress this long (from its request) raises `port_stuck` jeopardy",
    )
    activation_late_after_s: PositiveSeconds = Field(
        3600.0,
        description="an activation not done this long after its date begins (00:00 UTC) raises "
        "`activation_late` jeopardy",
    )


class HttpServerSettings(_Group):
    host: str = Field("127.0.0.1", description="interface to bind")
    port: Port = Field(8082, description="port to bind")
    token: SecretStr | None = Field(None, description="bearer token callers must present; None disables")


class Settings(BaseSettings):
    """The one configuration object. Build it with `load_settings()` to get readable errors."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_DELIMITER,
        frozen=True,
        extra="forbid",
    )

    kafka: KafkaSettings = KafkaSettings()
    database: DatabaseSettings = DatabaseSettings()
    connect: ConnectSettings = ConnectSettings()
    webhook: WebhookSettings = WebhookSettings()
    admin: HttpServerSettings = HttpServerSettings(port=8083)
    engine: EngineSettings = EngineSettings()
    outbox: OutboxSettings = OutboxSettings()
    jeopardy: JeopardySettings = JeopardySettings()
    log_level: str = Field(
        "INFO", description="DEBUG, INFO, WARNING or ERROR", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$"
    )
    log_json: bool = Field(True, description="JSON logs (production); False for console-friendly lines")
    fault_point: str | None = Field(
        None,
        description="tests only: `point[@kind][:n][,…]` makes `orchestrator run` (or an operator "
        "command) SIGKILL itself the n-th time it reaches a named point, for that kind of work or "
        "any (see orchestrator/faults.py)",
    )

    @field_validator("fault_point")
    @classmethod
    def _known_fault_points(cls, value: str | None) -> str | None:
        if value:
            parse_spec(value)  # FaultSpecError is a ValueError: reported with the variable's name
        return value


def env_name(loc: tuple[int | str, ...]) -> str:
    """The environment variable that sets the field at `loc` (as pydantic reports it)."""
    return ENV_PREFIX + ENV_DELIMITER.join(str(part).upper() for part in loc)


def load_settings(**overrides: object) -> Settings:
    """Read the environment; on a bad value raise ConfigError naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(f"{env_name(err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ConfigError(f"invalid configuration: {problems}") from exc


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment variables that reproduce `settings` (secrets revealed): how a parent hands
    its exact configuration to an `orchestrator run` child process."""
    env: dict[str, str] = {}

    def walk(model: BaseModel, prefix: tuple[str, ...]) -> None:
        for name in type(model).model_fields:
            value = getattr(model, name)
            if isinstance(value, BaseModel):
                walk(value, (*prefix, name))
            elif isinstance(value, SecretStr):
                env[env_name((*prefix, name))] = value.get_secret_value()
            elif value is not None:
                env[env_name((*prefix, name))] = str(value).lower() if isinstance(value, bool) else str(value)

    walk(settings, ())
    return env


def settings_table() -> str:
    """The README's configuration table, generated so that the docs cannot drift from the code."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]

    def walk(group: BaseModel, prefix: tuple[str, ...]) -> None:
        for name, field in type(group).model_fields.items():
            value = getattr(group, name)
            if isinstance(value, _Group):
                walk(value, (*prefix, name))
                continue
            if isinstance(value, SecretStr):
                shown = "(secret)"
            elif value is None:
                shown = "unset"
            else:
                shown = f"`{value}`"
            rows.append(f"| `{env_name((*prefix, name))}` | {shown} | {field.description or ''} |")

    defaults = Settings.model_construct()  # field defaults only, no environment
    walk(defaults, ())
    return "\n".join(rows)
