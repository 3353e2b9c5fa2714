"""servicectl.process: whole process groups stopped, nothing left behind; ports."""

from __future__ import annotations

import signal
import socket
import sys
import time
from pathlib import Path

from servicectl.process import (
    INTERRUPT,
    alive,
    free_port,
    port_in_use,
    running,
    start,
    stop,
    tail,
)

#: Python that ignores SIGTERM, says so, and sleeps.
DEAF = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(600)"
)
#: A leader that starts a SIGTERM-deaf grandchild in its group, writes its pid, and sleeps (it
#: dies of SIGTERM itself).
LEADER = (
    "import subprocess, sys, time; "
    f"child = subprocess.Popen([sys.executable, '-c', {DEAF!r}]); "
    "open(sys.argv[1], 'w').write(str(child.pid)); time.sleep(600)"
)


def _wait_for(condition: object, timeout_s: float = 60.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def _running(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_child_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    log = tmp_path / "deaf.log"
    proc = start([sys.executable, "-c", DEAF], cwd=tmp_path, env={}, log=log)
    _wait_for(lambda: "ready" in log.read_text())
    stop(proc, signals=((signal.SIGTERM, 0.5),), linger_s=0.5)
    assert proc.returncode == -signal.SIGKILL
    assert not alive(proc.pid)


def test_a_grandchild_that_outlives_the_leader_is_reaped(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    log = tmp_path / "leader.log"
    proc = start([sys.executable, "-c", LEADER, str(pidfile)], cwd=tmp_path, env={}, log=log)
    _wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() != "")
    grandchild = int(pidfile.read_text())
    _wait_for(lambda: "ready" in log.read_text())
    assert _running(grandchild)
    stop(proc, signals=((signal.SIGTERM, 10.0),), linger_s=0.5)
    # The leader went on SIGTERM, the grandchild ignored it and was killed after the linger.
    assert proc.returncode == -signal.SIGTERM
    _wait_for(lambda: not _running(grandchild), timeout_s=10)
    assert not alive(proc.pid)


def test_interrupt_sends_sigint_first(tmp_path: Path) -> None:
    """`dagster dev` shuts down on SIGINT: it gets SIGINT, and time to exit on it."""
    code = (
        "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "signal.signal(signal.SIGINT, lambda *a: sys.exit(3)); print('ready', flush=True); "
        "time.sleep(600)"
    )
    log = tmp_path / "int.log"
    command = [sys.executable, "-c", code]
    with running(command, cwd=tmp_path, env={}, log=log, signals=INTERRUPT) as proc:
        _wait_for(lambda: "ready" in log.read_text())
    # `running` stopped it on leaving the block; exit code 3 is its SIGINT handler's.
    assert proc.returncode == 3
    assert not alive(proc.pid)


def test_stop_by_pid_as_a_later_process_would(tmp_path: Path) -> None:
    """`make stack down` only has the pid from stack.json."""
    log = tmp_path / "sleep.log"
    proc = start([sys.executable, "-c", DEAF], cwd=tmp_path, env={}, log=log)
    _wait_for(lambda: "ready" in log.read_text())
    assert alive(proc.pid)
    stop(proc.pid, signals=((signal.SIGTERM, 0.5),), linger_s=0.5)
    assert not alive(proc.pid)
    assert not _running(proc.pid)  # killed, and reaped by `stop` (it is this process's child)


def test_alive_is_false_for_no_pid_and_for_an_exited_process(tmp_path: Path) -> None:
    assert not alive(None)
    proc = start([sys.executable, "-c", "pass"], cwd=tmp_path, env={}, log=tmp_path / "x.log")
    _wait_for(lambda: not alive(proc.pid))


def test_tail_gives_the_last_lines_or_says_there_is_no_log(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("".join(f"line {i}\n" for i in range(1, 101)))
    assert tail(log, 3) == "line 98\nline 99\nline 100"
    assert tail(tmp_path / "missing.log") == "(no log)"


def test_free_port_is_free_and_port_in_use_sees_a_listener() -> None:
    port = free_port()
    assert not port_in_use(port)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        assert port_in_use(port)
    assert not port_in_use(port)
