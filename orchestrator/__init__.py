"""Provisioning orchestrator: CRM orders in on Kafka, durable line item workflows in Postgres,
idempotent calls to the Connect API, status events out."""

__version__ = "0.1.0"
