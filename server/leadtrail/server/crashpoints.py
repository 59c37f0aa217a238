"""Named points where a test may kill the server abruptly, to prove what survives a crash.

``LEADTRAIL_CRASH_AT=<name>`` in the environment makes the process SIGKILL itself the
first time it reaches ``crash_point(<name>)``: no cleanup, no flush, exactly like
``kill -9`` at that instant. Read once at import; unset (always, outside tests), a
crash point costs one comparison.
"""

from __future__ import annotations

import os
import signal

ENVIRONMENT = "LEADTRAIL_CRASH_AT"
_AT = os.environ.get(ENVIRONMENT, "")


def crash_point(name: str) -> None:
    if _AT and name == _AT:
        os.kill(os.getpid(), signal.SIGKILL)
