"""What several benchmarks share: the machine's description and a PostgreSQL to run on."""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Iterator
from pathlib import Path


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


@contextlib.contextmanager
def postgres(url: str | None, database: str = "bench") -> Iterator[str]:
    """``url`` itself, or a database on a throwaway server started from the installed
    PostgreSQL binaries (the test suite's tests/postgres.py), removed afterwards."""
    if url:
        yield url
        return
    from tests.postgres import PostgresServer, find_pg_bin_dir

    bin_dir = find_pg_bin_dir()
    if bin_dir is None:
        raise SystemExit("PostgreSQL server binaries not found: install postgresql or pass --storage URL")
    with PostgresServer(bin_dir) as server:
        yield server.create_database(database)


def stand_in_trainer(epoch_seconds: float = 0.0):
    """Stands in for ``hpo.training.train_model`` so that a benchmark times the service, not
    a model: sleeps ``epoch_seconds`` per epoch and reports a constant (so the median rule
    never prunes and every trial lasts the same)."""
    import time

    def train(data, model, train, *, device, reporter, checkpoints=None, stop_requested=None):
        from hpo.training.metrics import EpochMetrics, TrainingResult

        history = []
        for epoch in range(1, train.epochs + 1):
            if epoch_seconds:
                time.sleep(epoch_seconds)
            metrics = EpochMetrics(epoch=epoch, train_loss=1.0, val_loss=1.0, val_accuracy=0.5,
                                   seconds=epoch_seconds, lr=train.lr)
            history.append(metrics)
            if reporter.report(metrics):
                break
        return TrainingResult(history=history, pruned=False, stopped_early=False, params_trainable=1,
                              params_total=1, seconds_per_epoch=epoch_seconds, device=device, seed=0,
                              peak_memory_mb=None, images_per_second=0.0, precision="fp32")

    return train


def write_table(table: str, output: Path | None) -> None:
    """Print the benchmark's Markdown, and write it to ``output`` when given."""
    print(table)
    if output:
        output.write_text(table + "\n")
