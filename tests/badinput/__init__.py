"""Malformed and hostile input, one file per kind (spec files, spec values, CLI arguments,
storage URLs and files, image folders, requests to the dashboard).

Every case ends the same way, stated once here: a non-zero exit with one ``Error: ...`` line
naming what was wrong and what is accepted (or the documented safe behaviour), no traceback,
bounded time and memory, and nothing created or changed in the storage.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import threading
import time
import tracemalloc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.specs import hpo_command, hpo_env

# Generous on a loaded 2-core machine; a case that loops or hangs still ends here.
CASE_TIMEOUT = 120


def assert_refused(result: Any, *, says: str | Sequence[str], exit_code: int = 2) -> None:
    """``result`` (click's ``Result`` or a ``CompletedProcess``) exited ``exit_code`` with
    stderr one ``Error: `` line holding each of ``says``, and no traceback anywhere."""
    stderr = result.stderr or ""
    stdout = result.stdout if isinstance(result, subprocess.CompletedProcess) else result.output
    shown = f"exit {_code(result)}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    assert _code(result) == exit_code, shown
    assert "Traceback" not in stderr and "Traceback" not in (stdout or ""), shown
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), shown
    for text in [says] if isinstance(says, str) else says:
        assert text in lines[0], f"{text!r} not in the error line\n{shown}"


class OverBound(Exception):
    """Raised by ``within_bounds`` when a case runs past its time limit."""


@contextmanager
def within_bounds(seconds: float = 30, megabytes: float = 200) -> Iterator[None]:
    """For an in-process case: fail it if it runs longer than ``seconds`` (SIGALRM interrupts a
    hang; main thread only) or Python's allocations peak above ``megabytes`` (tracemalloc, so
    memory other processes or torch's allocator hold does not count)."""

    def alarm(signum: int, frame: Any) -> None:
        raise OverBound(f"ran longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    tracemalloc.start()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak / 2**20 <= megabytes, f"Python allocations peaked at {peak / 2**20:.0f} MB > {megabytes} MB"


def _code(result: Any) -> int:
    return result.returncode if isinstance(result, subprocess.CompletedProcess) else result.exit_code


def snapshot(*paths: Path) -> dict[str, str]:
    """Every file under ``paths`` (files or folders) with its sha256: compare one taken before
    a case with one taken after it to show that nothing was created or changed."""
    seen: dict[str, str] = {}
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for file in files:
            seen[str(file)] = hashlib.sha256(file.read_bytes()).hexdigest()
    return seen


@dataclass
class Bounded:
    """What ``run_bounded`` saw: the process's result, its peak resident memory and time."""

    result: subprocess.CompletedProcess[str]
    peak_mb: float
    seconds: float


def run_bounded(*args: str, cwd: Path | str | None = None, env: dict[str, str] | None = None,
                timeout: float = CASE_TIMEOUT) -> Bounded:
    """Run ``hpo ARGS`` in a subprocess and measure its peak RSS from ``wait4``'s rusage of
    that one child (other processes do not count); a run past ``timeout`` is killed and fails."""
    started = time.monotonic()
    proc = subprocess.Popen(hpo_command(*args), cwd=cwd, env=env if env is not None else hpo_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            text=True, start_new_session=True)
    out: dict[str, str] = {}
    readers = [threading.Thread(target=lambda k=k, f=f: out.__setitem__(k, f.read()), daemon=True)
               for k, f in (("stdout", proc.stdout), ("stderr", proc.stderr))]
    for reader in readers:
        reader.start()
    while True:  # wait4 reaps the child itself, so its rusage is its own
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() - started > timeout:
            os.killpg(proc.pid, signal.SIGKILL)
            os.wait4(proc.pid, 0)
            raise AssertionError(f"hpo {' '.join(args)} ran longer than {timeout} s")
        time.sleep(0.02)
    proc.returncode = os.waitstatus_to_exitcode(status)
    for reader in readers:
        reader.join()
    seconds = time.monotonic() - started
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out["stdout"], out["stderr"])
    return Bounded(result, usage.ru_maxrss / 1024, seconds)  # ru_maxrss is in KiB on Linux
