"""Loading never touches the network (mnist1d is generated, never downloaded)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from archscreen.core.data import available, clear_cache, get_dataset, load_dataset, mnist1d_data


def test_fresh_loads_make_no_network_calls(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    reference = load_dataset("mnist1d", seed=0)  # possibly cached by earlier tests

    attempts: list[tuple[Any, ...]] = []

    def deny(*args: Any, **kwargs: Any) -> Any:
        attempts.append(args)
        raise OSError("network access is disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", deny)
    monkeypatch.setattr(socket.socket, "connect_ex", deny)
    monkeypatch.setattr(socket, "create_connection", deny)
    monkeypatch.setattr(socket, "getaddrinfo", deny)
    monkeypatch.chdir(tmp_path)  # mnist1d's downloader would drop a pickle in the cwd

    clear_cache()
    misses = mnist1d_data._generate.cache_info().misses
    np_state = np.random.get_state()
    fresh = {name: get_dataset(name).load(0) for name in available()}

    assert attempts == []
    assert mnist1d_data._generate.cache_info().misses == misses + 1  # really regenerated
    assert list(tmp_path.iterdir()) == []
    after = np.random.get_state()
    assert np_state[0] == after[0] and np.array_equal(np_state[1], after[1]) and np_state[2:] == after[2:]
    for attr in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):  # generation is deterministic
        assert torch.equal(getattr(fresh["mnist1d"], attr), getattr(reference, attr))
