"""Alembic migrations (shipped in the package so `archscreen migrate` works from a wheel)."""
