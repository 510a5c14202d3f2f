"""Errors the sandbox answers with, in one body shape:

    {"message": str, "code": str, "details": [{"message", "code", "property"}]}

This follows the third-party description of the provider's errors ([S] in connect-api.md); the
client branches on the status first, so a different real shape degrades gracefully.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []
        self.headers = headers or {}


def detail(message: str, *, code: str, property: str | None = None) -> dict[str, Any]:
    return {"message": message, "code": code, "property": property}


def bad_request(message: str, *, code: str = "validation_error", prop: str | None = None) -> ApiError:
    return ApiError(400, "validation_error", message, details=[detail(message, code=code, property=prop)])


def not_found(kind: str, ident: str) -> ApiError:
    return ApiError(404, "not_found", f"{kind} {ident} not found")


def invalid_state(message: str) -> ApiError:
    return ApiError(409, "invalid_state", message)


def error_body(status: int, code: str, message: str, details: list[dict[str, Any]] | None = None) -> bytes:
    return json.dumps({"message": message, "code": code, "details": details or []}).encode()


def error_response(error: ApiError) -> Response:
    return Response(
        error_body(error.status, error.code, error.message, error.details),
        status_code=error.status,
        headers=error.headers,
        media_type="application/json",
    )
