"""service_cli.group_members: what `up` waits on before it reports its workers stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from archscreen.service_cli import group_members

# a group leader that starts a child and both sleep; the leader prints the child's pid
LEADER = (
    "import subprocess, time; c = subprocess.Popen(['sleep', '60']); print(c.pid, flush=True); time.sleep(60)"
)


def test_members_of_a_process_group_until_it_is_gone() -> None:
    leader = subprocess.Popen(
        [sys.executable, "-c", LEADER], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert leader.stdout is not None
        child = int(leader.stdout.readline())
        assert sorted(group_members(leader.pid)) == sorted([leader.pid, child])
        assert os.getpid() not in group_members(leader.pid)
        os.kill(child, signal.SIGKILL)  # a zombie until the leader reaps it: not a member
        deadline = time.monotonic() + 10
        while child in group_members(leader.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert group_members(leader.pid) == [leader.pid]
    finally:
        os.killpg(leader.pid, signal.SIGKILL)
        leader.wait(10)
    assert group_members(leader.pid) == []
