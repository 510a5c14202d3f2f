"""What the client needs to know, apart from how the application reads its configuration."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ConnectConfig"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectConfig:
    """One API key's endpoint, timeouts and limits. The application builds it from its settings
    (`ConnectSettings.to_config()`), where each field is documented and validated."""

    base_url: str
    api_key: str = field(repr=False)  # a credential: kept out of reprs, so out of logs
    connect_timeout_s: float
    read_timeout_s: float
    total_timeout_s: float
    max_concurrency: int
    rate_limit_per_s: float
    rate_limit_burst: int
    keepalive_expiry_s: float
    max_retry_after_s: float

    def __post_init__(self) -> None:
        # The client sizes its connection pools from this; a zero would divide by zero later.
        if self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {self.max_concurrency}")
