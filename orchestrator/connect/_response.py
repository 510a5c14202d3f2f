"""What came back from one call: the raw answer plus its classification."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from orchestrator import fastjson
from orchestrator.connect._errors import Outcome, ProviderBadResponse, ProviderError

__all__ = ["ProviderResponse"]

_M = TypeVar("_M", bound=BaseModel)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderResponse:
    """A provider answer that arrived (any status). `error` is None for a 2xx/3xx."""

    method: str
    path: str
    status: int
    headers: dict[str, str]
    content: bytes
    error: ProviderError | None = None
    replayed: bool = field(default=False)  # the provider served it from its idempotency cache

    @property
    def outcome(self) -> Outcome:
        return Outcome.SUCCESS if self.error is None else self.error.outcome

    def json(self) -> Any:
        """The parsed body (None for an empty one); a non-JSON body raises ProviderBadResponse."""
        if not self.content:
            return None
        try:
            return fastjson.loads(self.content)
        except ValueError as exc:
            raise ProviderBadResponse(
                f"{self.method} {self.path} -> {self.status}: body is not JSON",
                status=self.status,
                method=self.method,
                path=self.path,
            ) from exc

    def raise_for_outcome(self) -> ProviderResponse:
        if self.error is not None:
            raise self.error
        return self

    def parse(self, model: type[_M]) -> _M:
        """The body as `model`, after raising the classified error for a non-success answer."""
        self.raise_for_outcome()
        try:
            return model.model_validate(self.json())
        except ValidationError as exc:
            raise ProviderBadResponse(
                f"{self.method} {self.path} -> {self.status}: body does not match {model.__name__}: "
                f"{exc.error_count()} problem(s), first at {exc.errors()[0]['loc']}",
                status=self.status,
                method=self.method,
                path=self.path,
            ) from exc
