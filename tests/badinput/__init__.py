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
import tempfile
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


# Runs hpo's CLI and, at exit, writes the process's own peak RSS (VmHWM) to a file. Measured
# from inside because a child's rusage (wait4) counts the memory its parent had when it forked,
# which exec does not reset: under pytest that hides a small child's peak under the parent's.
_MEASURED_MAIN = """
import atexit, os, sys
def _write_peak():
    with open("/proc/self/status") as status:
        kib = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    with open(os.environ["HPO_TEST_PEAK_FILE"], "w") as out:
        out.write(kib)
atexit.register(_write_peak)
from hpo.cli.main import main
sys.argv = ["hpo", *sys.argv[1:]]
main()
"""


def run_bounded(*args: str, cwd: Path | str | None = None, env: dict[str, str] | None = None,
                timeout: float = CASE_TIMEOUT) -> Bounded:
    """Run ``hpo ARGS`` in a subprocess and measure its own peak RSS (VmHWM, read by the child
    as it exits); a run past ``timeout`` is killed and fails the test."""
    with tempfile.TemporaryDirectory() as scratch:
        peak_file = Path(scratch) / "peak_kib"
        child_env = dict(env if env is not None else hpo_env(), HPO_TEST_PEAK_FILE=str(peak_file))
        started = time.monotonic()
        proc = subprocess.Popen([hpo_command()[0], "-P", "-c", _MEASURED_MAIN, *args], cwd=cwd, env=child_env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                text=True, start_new_session=True)
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise AssertionError(f"hpo {' '.join(args)} ran longer than {timeout} s") from None
        seconds = time.monotonic() - started
        assert peak_file.exists(), f"hpo {' '.join(args)} exited without running its exit handlers\n{stderr}"
        peak_mb = int(peak_file.read_text()) / 1024
    result = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    return Bounded(result, peak_mb, seconds)
