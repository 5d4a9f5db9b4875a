"""CPU threads per worker: the machine's cores shared among the hpo workers running on it.

Torch uses every core by default. Several workers started by hand on one machine (four
terminals, say) then oversubscribe the CPU, and OpenMP's spin-waiting makes that
catastrophic: an epoch takes many times longer than with one thread per worker
(BENCHMARKS.md has the numbers). No library tracks the other workers of a machine, so each
worker leaves its pid in a per-user directory, and before every trial sets its threads to
cores // live workers (``HPO_THREADS`` overrides).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

ENV_VAR = "HPO_THREADS"


def registry_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"hpo-workers-{os.getuid()}"


@contextlib.contextmanager
def registered_worker() -> Iterator[None]:
    """Count this process among the machine's live workers while the block runs."""
    path = registry_dir() / str(os.getpid())
    try:
        path.parent.mkdir(exist_ok=True)
        path.touch()
    except OSError:  # no writable temp dir: threads fall back to all cores
        pass
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def live_workers() -> int:
    """Registered workers whose process still exists (stale entries are removed)."""
    alive = 0
    try:
        entries = list(registry_dir().iterdir())
    except OSError:
        return 1
    for entry in entries:
        try:
            os.kill(int(entry.name), 0)
            alive += 1
        except ProcessLookupError:
            entry.unlink(missing_ok=True)
        except (ValueError, PermissionError):
            continue
    return max(1, alive)


def threads_per_worker() -> int:
    override = os.environ.get(ENV_VAR, "")
    if override.isdigit() and int(override) > 0:
        return int(override)
    return max(1, (os.cpu_count() or 1) // live_workers())


def share_cpu() -> int:
    """Set torch's intra-op threads to this worker's share of the cores; returns it.

    Only once torch is loaded (a worker's warm-up loads it before the first trial): a
    worker with a stand-in trainer (benchmarks) never imports it, which saves ~300 MB."""
    torch = sys.modules.get("torch")
    threads = threads_per_worker()
    if torch is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads
