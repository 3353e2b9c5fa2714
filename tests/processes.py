"""Helpers for the servers the tests start as real processes."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path


def tail(path: Path, lines: int = 40) -> str:
    """The end of a server's log, for a failure message."""
    text = path.read_text(errors="replace") if path.exists() else "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def stop(proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """Stop a server and its children: SIGTERM to its process group, SIGKILL if it lingers.

    Start servers with `start_new_session=True` so the group holds the workers they fork.
    """
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)
    except ProcessLookupError:
        pass
