"""The admin HTTP surface: the operator actions as a JSON API (OpenAPI at `/docs`), the web
console (`/console`), `/healthz`, `/readyz` and `/metrics`, behind a bearer token.

    app = create_admin_app(settings=settings, token=settings.admin.token.get_secret_value())
    async with serve_admin(app, host="127.0.0.1", port=8083) as url: ...

See docs/operations.md.
"""

from orchestrator.admin._app import create_admin_app
from orchestrator.admin._auth import AdminConfigError, Unauthorized
from orchestrator.admin._metrics import WorkerCounters
from orchestrator.admin._server import serve_admin

__all__ = ["AdminConfigError", "Unauthorized", "WorkerCounters", "create_admin_app", "serve_admin"]
