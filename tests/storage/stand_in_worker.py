"""Many hpo worker processes that train nothing and never import torch, for tests that need
dozens of workers on a 2-core machine:

    python -m tests.storage.stand_in_worker STUDY --workers N --log-dir DIR [--epoch-seconds S]

Each worker runs hpo's real trial loop (``hpo.worker.loop.run_worker``: the budget, ask/tell,
sampling, one report and prune check per epoch, heartbeats, the periodic sweep) with the
benchmarks' stand-in for training, which sleeps ``--epoch-seconds`` per epoch. What these
tests check is the service's coordination through the storage, so two start-up costs are cut:

- torch (~3 s of CPU and hundreds of MB per process) is replaced by a few-line stand-in for
  what a trial's bookkeeping asks of it (threads, version, devices);
- one process imports hpo, Optuna, SQLAlchemy and psycopg once, then forks the N workers,
  which share those pages: 64 separate interpreters would spend a minute of both cores on
  imports alone. Nothing is connected before the fork; each worker opens its own storage.

Worker ``rank`` (0..N-1) records host ``node-RANK`` in its trials, as if each ran on a machine
of its own: a worker that dies is then found by its missing heartbeats, the way it is across
machines, rather than by its pid on this host. Its output goes to DIR/worker-RANK.log; once
all have exited, DIR/exit-codes.json maps each rank to its exit status (negative: killed by
that signal). Storage from ``$HPO_STORAGE``.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import signal
import socket
import sys
import types
from pathlib import Path


def stand_in_torch() -> types.ModuleType:
    """What a trial's bookkeeping asks of torch (threads, version, devices); nothing else."""
    torch = types.ModuleType("torch")
    threads = [1]
    torch.__dict__.update(
        __version__="stand-in",
        get_num_threads=lambda: threads[0],
        set_num_threads=lambda n: threads.__setitem__(0, n),
        OutOfMemoryError=type("OutOfMemoryError", (RuntimeError,), {}),
        cuda=types.SimpleNamespace(is_available=lambda: False, device_count=lambda: 0, empty_cache=lambda: None),
    )
    return torch


def import_everything() -> None:
    """What a worker imports on its way to its first trial, once, before the fork."""
    import alembic.migration  # noqa: F401 - Optuna's schema check
    import optuna.storages._rdb.storage  # noqa: F401
    import psycopg  # noqa: F401
    import sqlalchemy.dialects.postgresql.psycopg  # noqa: F401

    import hpo.spec.space  # noqa: F401
    import hpo.spec.strategies  # noqa: F401
    import hpo.storage.proxies  # noqa: F401
    import hpo.storage.writes  # noqa: F401
    import hpo.worker.loop  # noqa: F401
    import hpo.worker.pruning  # noqa: F401
    import hpo.worker.trial  # noqa: F401


def run_one(study: str, rank: int, epoch_seconds: float, log: Path) -> int:
    """One worker, in a forked child: its output to ``log``; returns its exit status."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # a hung worker's stacks: kill -USR1 PID
    host = f"node-{rank}"
    socket.gethostname = lambda: host  # only its heartbeats tell the others that it died
    import hpo.worker.loop as loop
    from benchmarks.common import stand_in_trainer
    from hpo.storage.urls import resolve_storage

    # The warm-up loads the fixed dataset and torch's kernels: the stand-in trains on neither.
    loop._warm_up = lambda spec, device: None  # type: ignore[assignment]
    report = loop.run_worker(study, resolve_storage(os.environ["HPO_STORAGE"]), rank=rank,
                             trainer=stand_in_trainer(epoch_seconds))
    print(f"stand-in worker {rank}: {report.stop_reason}", flush=True)
    return report.exit_code


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("study")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--epoch-seconds", type=float, default=0.0)
    parser.add_argument("--log-dir", type=Path, required=True)
    args = parser.parse_args(argv)

    sys.modules["torch"] = stand_in_torch()
    import_everything()
    children = {}
    for rank in range(args.workers):
        pid = os.fork()
        if pid == 0:  # the child: never returns into the parent's code
            code = 70
            try:
                code = run_one(args.study, rank, args.epoch_seconds, args.log_dir / f"worker-{rank}.log")
            except BaseException:  # noqa: BLE001 - reported in its log, as a worker's crash would be
                import traceback

                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        children[pid] = rank
    codes = {}
    while children:
        pid, status = os.wait()
        codes[children.pop(pid)] = os.waitstatus_to_exitcode(status)
    (args.log_dir / "exit-codes.json").write_text(json.dumps({str(rank): codes[rank] for rank in sorted(codes)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
