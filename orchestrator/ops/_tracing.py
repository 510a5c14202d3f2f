"""OpenTelemetry tracing hooks, off unless configured.

Operator actions (list, show, replay, cancel, retry-now) and admin requests run inside `span(...)`.
By default that is a no-op. `enable_tracing()` switches to OpenTelemetry's API
(`opentelemetry.trace.get_tracer("orchestrator")`) when the `opentelemetry-api` package is
importable; spans then go wherever the process's OpenTelemetry SDK sends them (install
`opentelemetry-sdk` and an exporter, and configure them before calling `enable_tracing()`).
Without the SDK the API itself is a no-op, so enabling is always safe. Any other tracer can be
plugged with `set_tracer(...)`: an object whose `start_as_current_span(name, attributes=...)` is
a context manager. The engine's step runner carries no spans yet (see docs/operations.md).
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from typing import Any, Protocol


class Tracer(Protocol):
    def start_as_current_span(self, name: str, *, attributes: dict[str, Any] | None = None) -> Any: ...


_tracer: Tracer | None = None


def set_tracer(tracer: Tracer | None) -> None:
    """Plug a tracer (None switches tracing off again)."""
    global _tracer  # noqa: PLW0603 - one process-wide hook, like logging's configuration
    _tracer = tracer


def enable_tracing() -> bool:
    """Use OpenTelemetry's API if it is installed; returns whether it was."""
    try:
        trace = importlib.import_module("opentelemetry.trace")
    except ImportError:
        return False
    set_tracer(trace.get_tracer("orchestrator"))
    return True


@contextlib.contextmanager
def span(name: str, **attributes: Any) -> Iterator[None]:
    """A span around an operator action; attributes are ids and counts, never secrets."""
    if _tracer is None:
        yield
        return
    clean = {k: v if isinstance(v, str | int | float | bool) else str(v) for k, v in attributes.items()}
    with _tracer.start_as_current_span(name, attributes=clean):
        yield
