"""Provider webhook ingress: `POST /webhooks/connect` → `connect.events.v1`, answered 2xx only
after Kafka acknowledged the event. Build the app with `create_webhook_app` and serve it in-process
with `serve_webhooks` (async context manager yielding the base URL). The envelope it validates is
`orchestrator.events.ProviderWebhookEvent`.
"""

from orchestrator.webhooks._app import DEFAULT_MAX_BODY_BYTES, WEBHOOK_PATH, create_webhook_app
from orchestrator.webhooks._server import serve_webhooks

__all__ = ["DEFAULT_MAX_BODY_BYTES", "WEBHOOK_PATH", "create_webhook_app", "serve_webhooks"]
