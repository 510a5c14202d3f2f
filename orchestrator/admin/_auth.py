"""Who may call: a bearer token for the API; for the console, a cookie derived from the token.

The console cookie is an HMAC of the token, not the token itself, so a leaked cookie cannot be
replayed against the API as a bearer token. Comparisons are constant-time.
"""

from __future__ import annotations

import hashlib
import hmac

from orchestrator.ops import OpsError

COOKIE = "orchestrator_console"
OPERATOR_COOKIE = "orchestrator_operator"


class Unauthorized(OpsError):
    """No or wrong credentials."""

    code = "unauthorized"
    http_status = 401
    bad_input = True


class AdminConfigError(OpsError):
    """The admin app cannot start as configured (e.g. no token)."""

    code = "admin_config_invalid"


class TokenCheck:
    def __init__(self, token: str) -> None:
        if not token or not token.strip():
            raise AdminConfigError(
                "the admin API needs a bearer token: set ORCHESTRATOR_ADMIN__TOKEN "
                "(it refuses to start without one)"
            )
        self._token = token.encode()
        self._session = hmac.new(self._token, b"console-session", hashlib.sha256).hexdigest()

    def bearer_ok(self, authorization: str | None) -> bool:
        scheme, _, value = (authorization or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self._token)

    def token_ok(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token.strip().encode(), self._token)

    @property
    def session(self) -> str:
        return self._session

    def session_ok(self, cookie: str | None) -> bool:
        return cookie is not None and hmac.compare_digest(cookie.encode(), self._session.encode())
