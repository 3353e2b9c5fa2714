"""Processes of services: started in sessions of their own, stopped with all their children.

A service is started as the leader of a new session (so of a new process group), its output to a
log file. Stopping it signals the whole group, escalates to SIGKILL when the leader lingers, and
then kills whatever of the group outlived the leader (Dagster's code server, MLflow's workers):
nothing is left behind. A zombie counts as gone: where PID 1 does not reap orphans (some
containers), an exited grandchild stays a zombie for ever.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from functools import partial
from pathlib import Path

#: A signal to the group and how long the leader gets to exit on it; SIGKILL comes after the last.
Signals = Sequence[tuple[signal.Signals, float]]
#: What most servers shut down on.
TERMINATE: Signals = ((signal.SIGTERM, 15.0),)
#: `dagster dev` shuts its webserver and daemon down on SIGINT, not on SIGTERM.
INTERRUPT: Signals = ((signal.SIGINT, 10.0), (signal.SIGTERM, 5.0))
#: How long what is left of a group may take to exit once its leader has.
LINGER_S = 5.0
#: How long a SIGKILLed process may take to go.
KILL_WAIT_S = 5.0
_PROC = Path("/proc")

#: A process this one started (a `Popen`), or the pid of a group leader started by an earlier one.
Process = subprocess.Popen[bytes] | int


class ServiceError(RuntimeError):
    """Something the user must act on; the message says what (with the end of the logs)."""


def start(
    command: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    log: Path,
    append: bool = False,
) -> subprocess.Popen[bytes]:
    """Start `command` as the leader of a session of its own, stdout and stderr to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab" if append else "wb") as out:
        return subprocess.Popen(
            list(command),
            cwd=cwd,
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stopped with all its children
        )


@contextmanager
def running(
    command: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    log: Path,
    signals: Signals = TERMINATE,
    linger_s: float = LINGER_S,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `command` (see `start`) for the `with` block; stop it and its children after."""
    proc = start(command, cwd=cwd, env=env, log=log)
    try:
        yield proc
    finally:
        stop(proc, signals=signals, linger_s=linger_s)


def stop(process: Process, *, signals: Signals = TERMINATE, linger_s: float = LINGER_S) -> None:
    """Stop a process and its whole process group (see `stop_all`)."""
    stop_all([process], signals=signals, linger_s=linger_s)


def stop_all(
    processes: Iterable[Process], *, signals: Signals = TERMINATE, linger_s: float = LINGER_S
) -> None:
    """Stop group leaders and their groups, all at once.

    Each of `signals` in turn goes to the groups whose leader still runs, and the leaders get its
    time to exit; a leader still there after the last is killed with its group. Whatever is left
    in a group `linger_s` seconds after its leader exited is killed too.
    """
    procs = list(processes)
    for sig, wait_s in signals:
        left = [p for p in procs if leader_running(p)]
        if not left:
            break
        for p in left:
            _signal_group(_pid(p), sig)
        _wait(partial(_none_running, left), wait_s)
    left = [p for p in procs if leader_running(p)]
    for p in left:
        _signal_group(_pid(p), signal.SIGKILL)
    _wait(partial(_none_running, left), KILL_WAIT_S)
    if _wait(lambda: not any(group_alive(_pid(p)) for p in procs), linger_s):
        return
    for p in procs:
        _signal_group(_pid(p), signal.SIGKILL)
    _wait(lambda: not any(group_alive(_pid(p)) for p in procs), KILL_WAIT_S)


def alive(pid: int | None) -> bool:
    """Whether anything of the process group led by `pid` still runs."""
    if not pid:
        return False
    reap(pid)
    return group_alive(pid)


def leader_running(process: Process) -> bool:
    """Whether the leader itself still runs (its group may outlive it)."""
    if isinstance(process, subprocess.Popen):
        return process.poll() is None
    reap(process)
    return _running(process)


def reap(pid: int) -> None:
    """Collect an exited child started by this process (a zombie would look alive)."""
    with suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def group_alive(pgid: int) -> bool:
    """Whether a process of group `pgid` runs (zombies do not count where /proc tells them)."""
    if not _PROC.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    return bool(group_members(pgid))


def group_members(pgid: int) -> list[Path]:
    """The /proc folders of the live processes in group `pgid` (Linux; empty elsewhere)."""
    found = []
    for stat in _PROC.glob("[0-9]*/stat"):
        fields = _stat_fields(stat)
        # After the command name: state, ppid, pgrp.
        if fields and int(fields[2]) == pgid and fields[0] != "Z":
            found.append(stat.parent)
    return found


def tail(path: Path, lines: int = 40) -> str:
    """The end of a log, for a failure message."""
    text = path.read_text(errors="replace") if path.exists() else "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1", timeout_s: float = 1.0) -> bool:
    """Whether something accepts connections on `host:port`."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _none_running(processes: list[Process]) -> bool:
    return not any(leader_running(p) for p in processes)


def _pid(process: Process) -> int:
    return process if isinstance(process, int) else process.pid


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    fields = _stat_fields(_PROC / str(pid) / "stat")
    return fields is None or fields[0] != "Z"


def _stat_fields(stat: Path) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name; None if unreadable or gone."""
    try:
        return stat.read_text().rpartition(")")[2].split()
    except OSError:  # the process ended while we looked, or there is no /proc
        return None


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _wait(done: Callable[[], bool], timeout_s: float, interval_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)
    return True
