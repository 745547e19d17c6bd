"""Named points where a test may kill the process, to show that every step leaves whole files.

    faults.point("publish:renamed-old")      # in the code, between two steps

A test runs a command with `HEADSTART_KILL_AT=publish:renamed-old` in its environment; the
process then sends itself SIGKILL at that point, as `kill -9` or a power cut would stop it
(no `finally`, no atexit, no flush). Without the variable a point does nothing.
"""

from __future__ import annotations

import os
import signal

ENV = "HEADSTART_KILL_AT"


def point(name: str) -> None:
    """SIGKILL this process here when HEADSTART_KILL_AT equals `name`; otherwise nothing."""
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
