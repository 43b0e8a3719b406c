"""HTTP layer of archscreen (FastAPI). Built by the service issue; see docs/architecture.md."""
