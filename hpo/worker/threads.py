"""CPU threads per worker: chosen once, when the worker starts, and kept for its whole life.

Torch uses every core by default. Several workers on one machine then oversubscribe the CPU,
and OpenMP's spin-waiting makes that catastrophic: an epoch takes many times longer than with
one thread per worker (BENCHMARKS.md has the numbers). So a worker takes a share of the cores.
It takes it once: a worker that re-shared before every trial (as hpo once did) gave the same
configuration 1, then 2 threads as other workers stopped, and its seconds per epoch varied
five-fold within one study, so no two trials' timings could be compared.

The count, in order of precedence:

- ``--threads N`` (``run_worker(threads=N)``), else ``HPO_THREADS=N``: N, for each process;
- a pool (``--processes K``, ``--gpus ... --per-gpu K``) knows its size: each child gets the
  cores available ÷ the pool's children, as ``--threads``;
- an independent worker: the cores available ÷ the hpo workers live on the machine at its
  start, itself included. No library tracks the other workers of a machine, so each worker
  leaves its pid (and its thread count) in a per-user directory. Workers started later take
  their own share; if the counts then add up to more than the cores, the worker says so
  once and keeps its count (its timings stay comparable; the fix is ``--threads``).

"Cores available" is what this process may run on (its CPU affinity: taskset, Slurm,
``docker --cpuset-cpus``), capped by a cgroup v2 CPU quota (``docker --cpus``, Kubernetes CPU
limits), neither of which ``os.cpu_count()`` sees.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hpo.errors import UsageError

ENV_VAR = "HPO_THREADS"
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


# --------------------------------------------------------------------------- the machine


def available_cores() -> int:
    """The cores this process may use: its affinity, capped by a cgroup CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS and Windows have no affinity call
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    return max(1, min(cores, quota) if quota is not None else cores)


def cgroup_cpu_quota(path: Path = CGROUP_CPU_MAX) -> int | None:
    """Whole CPUs the cgroup v2 quota allows (``"150000 100000"``: 1); None without a quota.

    Rounded down: a thread more than the quota is throttled, which is the slowdown the share
    exists to avoid. cgroup v1 is not read (hosts and containers default to v2 today)."""
    try:
        fields = path.read_text().split()
    except OSError:
        return None
    if len(fields) != 2 or not all(field.isdigit() for field in fields) or int(fields[1]) == 0:
        return None  # "max 100000": no quota
    return max(1, int(fields[0]) // int(fields[1]))


# --------------------------------------------------------------------------- the registry


def registry_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"hpo-workers-{os.getuid()}"


def _own_entry() -> Path:
    return registry_dir() / str(os.getpid())


@contextlib.contextmanager
def registered_worker() -> Iterator[None]:
    """Count this process among the machine's live workers while the block runs."""
    path = _own_entry()
    try:
        path.parent.mkdir(exist_ok=True)
        path.touch()
    except OSError:  # no writable temp dir: the worker counts itself alone
        pass
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _live_entries() -> list[Path]:
    """Registry entries whose process still exists (stale entries are removed)."""
    try:
        entries = list(registry_dir().iterdir())
    except OSError:
        return []
    alive = []
    for entry in entries:
        try:
            os.kill(int(entry.name), 0)
            alive.append(entry)
        except ProcessLookupError:
            entry.unlink(missing_ok=True)
        except (ValueError, PermissionError):
            continue
    return alive


def live_workers() -> int:
    """Registered workers whose process still exists; never zero (the caller is one)."""
    return max(1, len(_live_entries()))


def claimed_threads() -> int:
    """The thread counts the live workers left in the registry, added up (a worker that has
    not written one yet, or an older hpo's empty entry, counts as one thread)."""
    total = 0
    for entry in _live_entries():
        try:
            text = entry.read_text().strip()
        except OSError:
            continue
        total += int(text) if text.isdigit() else 1
    return total


# --------------------------------------------------------------------------- the choice


def requested_threads(threads: int | None = None) -> int | None:
    """The count asked for: ``threads`` (``--threads``), else ``HPO_THREADS``; None when
    neither says. Below one is refused (a UsageError: the user's mistake, one line); more
    than the cores is allowed, with a warning (the user may know better, e.g. to measure)."""
    if threads is not None:
        return _checked(threads, f"--threads {threads}")
    text = os.environ.get(ENV_VAR, "").strip()
    if not text:
        return None
    if not re.fullmatch(r"-?\d+", text):
        raise UsageError(f"{ENV_VAR}={text}: expected a number of threads >= 1")
    return _checked(int(text), f"{ENV_VAR}={text}")


def _checked(threads: int, given: str) -> int:
    if threads < 1:
        raise UsageError(f"{given}: expected a number of threads >= 1")
    cores = available_cores()
    if threads > cores:
        _warn(f"{given} is more than the {cores} cores this worker may use: its threads will "
              "wait for each other and every epoch slows down")
    return threads


def share_of_cores(workers: int) -> int:
    """The cores available ÷ ``workers``, at least one."""
    return max(1, available_cores() // max(1, workers))


def choose_threads(threads: int | None = None, *, workers: int | None = None) -> int:
    """The count a worker keeps: the one requested, else its share among ``workers`` (by
    default the workers live on the machine now, this one included)."""
    requested = requested_threads(threads)
    if requested is not None:
        return requested
    return share_of_cores(live_workers() if workers is None else workers)


# --------------------------------------------------------------------------- this process


@dataclass
class _Fixed:
    threads: int
    warned: bool = False


_fixed: _Fixed | None = None  # this process's count (torch's threads are per process too)


def fix_threads(requested: int | None = None) -> int:
    """Fix this worker's thread count for its life (call inside ``registered_worker``, so
    that the share counts this worker), leave it in the registry, apply it; returns it."""
    global _fixed
    _fixed = _Fixed(requested if requested is not None else share_of_cores(live_workers()))
    with contextlib.suppress(OSError):  # no registry: nobody else reads the count
        if _own_entry().exists():
            _own_entry().write_text(str(_fixed.threads))
    keep_threads()
    return _fixed.threads


def worker_threads() -> int:
    """This worker's fixed count (what a trial records as ``cpu_threads`` when torch is not
    loaded); outside a worker, the count one started now would choose."""
    return _fixed.threads if _fixed is not None else choose_threads()


def keep_threads() -> None:
    """Before each trial: torch's intra-op threads back at the fixed count (training code
    may have changed them), and one warning if the machine's workers oversubscribe it.

    Only once torch is loaded (a worker's warm-up loads it before the first trial): a worker
    with a stand-in trainer (benchmarks) never imports it, which saves ~300 MB."""
    if _fixed is None:
        return
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != _fixed.threads:
        torch.set_num_threads(_fixed.threads)
    if not _fixed.warned:
        claimed, cores = claimed_threads(), available_cores()
        if claimed > cores:
            _fixed.warned = True
            _warn(f"the hpo workers on this machine use {claimed} threads on {cores} cores: epochs "
                  f"slow down and timings stop being comparable; give each worker --threads (or "
                  f"{ENV_VAR}) so that they add up to the cores, or start them with --processes K")


def _warn(message: str) -> None:
    # stderr, one line: a pool's parent passes a child's stderr on with its rank.
    print(f"Warning: {message}", file=sys.stderr, flush=True)
