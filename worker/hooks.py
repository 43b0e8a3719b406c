"""Test hooks that stop a process for good at a chosen point, as a process stuck or killed there would.

Each is named by an environment variable that the service's processes inherit; unset (as deployed),
the hook does nothing.
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger("archscreen.worker")


def hold_once(env: str, ident: int, message: str) -> None:
    """Block this process forever if it is the first to create the file that ``env`` names, writing
    ``ident`` there so the test knows which trial or job was held.

    The exclusive create makes exactly one process fire, so the processes a test starts after it
    run normally. ``message`` says what is held, with ``%s`` for ``ident``.
    """
    marker = os.environ.get(env)
    if not marker:
        return
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, str(ident).encode())
    os.close(fd)
    log.warning("test hook %s: " + message, env, ident)
    threading.Event().wait()
