"""One hpo worker process that trains nothing and never imports torch, for tests that need
many worker processes on a 2-core machine:

    python -m tests.storage.stand_in_worker STUDY --rank N [--epoch-seconds S] [--ready FILE --go FILE]

It runs hpo's real trial loop (``hpo.worker.loop.run_worker``: the budget, ask/tell,
sampling, one report and prune check per epoch, heartbeats, the periodic sweep) with the
benchmarks' stand-in for training (it sleeps ``--epoch-seconds`` per epoch). Importing torch
costs each process ~3 s of CPU and hundreds of MB; what these tests check is the service's
coordination through the storage, so a few-line stand-in takes torch's place: the threads, the
version and the device queries a trial's bookkeeping makes. Storage from ``$HPO_STORAGE``; the
exit status is the worker's.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
import types
from pathlib import Path


def stand_in_torch() -> types.ModuleType:
    """What a trial's bookkeeping asks of torch (threads, version, devices); nothing else."""
    torch = types.ModuleType("torch")
    torch.__version__ = "stand-in"  # type: ignore[attr-defined]
    threads = [1]
    torch.get_num_threads = lambda: threads[0]  # type: ignore[attr-defined]
    torch.set_num_threads = lambda n: threads.__setitem__(0, n)  # type: ignore[attr-defined]
    torch.OutOfMemoryError = type("OutOfMemoryError", (RuntimeError,), {})  # type: ignore[attr-defined]
    torch.cuda = types.SimpleNamespace(is_available=lambda: False, device_count=lambda: 0,  # type: ignore[attr-defined]
                                       empty_cache=lambda: None)
    return torch


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("study")
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--epoch-seconds", type=float, default=0.0)
    parser.add_argument("--ready", type=Path, help="touched once imported")
    parser.add_argument("--go", type=Path, help="start when this file exists")
    parser.add_argument("--host", help="the host name it records in its trials, as a worker on another machine would")
    args = parser.parse_args(argv)

    sys.modules["torch"] = stand_in_torch()
    if args.host:  # then only its heartbeats tell the others that it died, as across machines
        socket.gethostname = lambda: args.host
    import hpo.worker.loop as loop
    from benchmarks.common import stand_in_trainer
    from hpo.storage.urls import resolve_storage

    # The warm-up loads the fixed dataset and torch's kernels: the stand-in trains on neither.
    loop._warm_up = lambda spec, device: None  # type: ignore[assignment]
    if args.ready:
        args.ready.touch()
    while args.go and not args.go.exists():
        time.sleep(0.01)
    report = loop.run_worker(args.study, resolve_storage(os.environ["HPO_STORAGE"]), rank=args.rank,
                             trainer=stand_in_trainer(args.epoch_seconds))
    print(f"stand-in worker {args.rank}: {report.stop_reason}", flush=True)
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
