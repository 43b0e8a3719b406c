"""Queue layer of archscreen (Celery). Built by the service issue; see docs/architecture.md."""
