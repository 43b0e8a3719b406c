"""Celery workers: the app, the tasks (which take job ids), leases, heartbeats and the reaper."""
