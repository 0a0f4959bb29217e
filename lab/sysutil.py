"""Small process helpers: run commands with a clear failure, track detached processes by PID.

The lab starts long-lived processes (systemd-nspawn, tinyproxy) that outlive the ``python3 -m
lab`` invocation. They are tracked by PID *and* kernel start time, so a recycled PID is never
mistaken for ours and we never signal a process the lab did not start.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from lab.errors import LabError

_T0 = time.monotonic()


def say(msg: str) -> None:
    """Progress on stderr (stdout stays clean for ``inventory``), stamped with elapsed time."""
    print(f"[{time.monotonic() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def run(argv: Sequence[str], step: str, host: str | None = None, hint: str = "",
        check: bool = True, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a short command, capturing output; raise LabError naming the step on failure."""
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, input=input_text)
    except FileNotFoundError as exc:
        raise LabError(step, f"{argv[0]} not found", hint or "run `python3 -m lab check`", host)
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise LabError(step, f"`{' '.join(argv)}` exited {proc.returncode}: " + " | ".join(detail),
                       hint, host)
    return proc


def start_time(pid: int) -> int | None:
    """Kernel start time of a PID (field 22 of /proc/PID/stat), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def spawn_detached(argv: Sequence[str], log: Path, record: Path) -> int:
    """Start a process in its own session, console to ``log``; record PID+start time."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
    st = start_time(proc.pid)
    record.write_text(json.dumps({"pid": proc.pid, "start": st, "argv": list(argv)}) + "\n")
    return proc.pid


def tracked_pid(record: Path) -> int | None:
    """The PID in ``record`` if that very process (same start time) is still alive."""
    try:
        data = json.loads(record.read_text())
    except (OSError, ValueError):
        return None
    pid = int(data["pid"])
    if data.get("start") is not None and start_time(pid) == data["start"]:
        return pid
    return None


def stop_tracked(record: Path, sig: int = signal.SIGTERM, timeout: float = 30.0) -> bool:
    """Signal the recorded process, wait for it, SIGKILL after ``timeout``; drop the record.

    Returns True if it had to be killed.
    """
    pid = tracked_pid(record)
    killed = False
    if pid is not None:
        os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while start_time(pid) is not None and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.2)
        if start_time(pid) is not None:
            os.kill(pid, signal.SIGKILL)
            killed = True
            while start_time(pid) is not None:
                _reap(pid)
                time.sleep(0.1)
    record.unlink(missing_ok=True)
    return killed


def _reap(pid: int) -> None:
    """Reap ``pid`` if it is our own child (it is when stopped by the invocation that started it)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (serialises lab invocations that share state)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
