"""The worker takes its settings as arguments (``use_settings``), not through ``os.environ``."""

from __future__ import annotations

import os
from pathlib import Path

from archscreen.settings import Settings


def test_use_settings_reconfigures_the_worker_and_leaves_the_environment(tmp_path: Path) -> None:
    from archscreen.worker import tasks

    environ = dict(os.environ)
    old, old_concurrency = tasks.settings, tasks._concurrency
    new = Settings(data_dir=tmp_path, device="cpu", jobs_per_gpu=3)
    try:
        tasks.use_settings(new, concurrency=3)
        assert tasks.settings is new and tasks._concurrency == 3
        assert tasks.app.conf.archscreen_settings is new
        # the embedded broker's folders are under the new data dir, not the environment's
        options = tasks.app.conf.broker_transport_options
        assert options == new.broker_transport_options() != old.broker_transport_options()
        assert str(tmp_path) in str(options)
        assert dict(os.environ) == environ
    finally:
        tasks.use_settings(old, concurrency=old_concurrency)
