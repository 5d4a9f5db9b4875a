"""What live progress costs the epoch loop: the per-batch report (hpo.training.loop's
throttled ``_BatchTicker``) on its own, and whole epochs of the digits MLP at batch size 16
(many tiny batches: the worst case, where a per-batch cost would show) trained with a reporter
that watches batches and feeds a live display (hpo.worker.progress.WorkerProgress on a
terminal console writing to memory) against one that watches epochs only.

    uv run python -m benchmarks.progress_overhead            # 2,000,000 ticks, 7 rounds of 3 epochs
    uv run python -m benchmarks.progress_overhead --tiny     # a smoke run (the test suite uses it)

Prints a Markdown table (and writes it with --output FILE).
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.common import machine, write_table


def tick_nanoseconds(n: int) -> tuple[float, float]:
    """(ns per tick of the ticker, ns per iteration of the same loop without it)."""
    from hpo.training.loop import _BatchTicker

    calls: list[int] = []
    ticker = _BatchTicker(lambda epoch, done, total: calls.append(done))
    ticker.start(1, n)
    started = time.perf_counter()
    for i in range(n):
        ticker.tick(i)
    ticking = time.perf_counter() - started
    started = time.perf_counter()
    for _i in range(n):
        pass
    bare = time.perf_counter() - started
    return ticking / n * 1e9, bare / n * 1e9


class EpochsOnly:
    def report(self, metrics: Any) -> bool:
        return False


class Live(EpochsOnly):
    """What a worker's reporter does with batches: emit them to the live display."""

    def __init__(self) -> None:
        from rich.console import Console

        from hpo.worker.progress import WorkerProgress

        self.show = WorkerProgress(console=Console(file=io.StringIO(), force_terminal=True, width=120))
        self.show("trial_start", {"trial": 0, "params": {}, "epochs": 3, "metric": "val_accuracy",
                                  "direction": "maximize"})
        self.batches = 0

    def batch(self, epoch: int, done: int, total: int) -> None:
        self.batches += 1
        self.show("batch", {"trial": 0, "epoch": epoch, "batch": done, "batches": total})


def epoch_seconds(rounds: int, epochs: int) -> tuple[list[float], list[float], int, int]:
    """Seconds per epoch with the live reporter and without, rounds interleaved; also the
    batches per epoch and how many of them were reported."""
    from hpo.models import MLPConfig
    from hpo.training import DataConfig, TrainConfig, train_model

    data = DataConfig(name="digits", val_fraction=0.2, test_fraction=0.2)
    train = TrainConfig(epochs=epochs, batch_size=16, seed=0)
    model = MLPConfig(n_layers=1, width=16)
    train_model(data, model, train)  # the data cached, torch warmed up
    live_s, plain_s, reported = [], [], 0
    for _ in range(rounds):
        live = Live()
        result = train_model(data, model, train, reporter=live)
        live.show.close()
        live_s.append(result.seconds_per_epoch)
        reported += live.batches
        plain_s.append(train_model(data, model, train, reporter=EpochsOnly()).seconds_per_epoch)
    images = int(result.images_per_second * result.seconds_per_epoch)  # training images per epoch
    return live_s, plain_s, -(-images // 16), reported // (rounds * epochs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="a smoke run")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    n, rounds, epochs = (20_000, 1, 1) if args.tiny else (2_000_000, 7, 3)
    ticking, bare = tick_nanoseconds(n)
    live_s, plain_s, batches, reported = epoch_seconds(rounds, epochs)
    live, plain = statistics.median(live_s), statistics.median(plain_s)
    table = "\n".join([
        f"Live progress overhead ({machine()}):",
        "",
        "| measure | value |",
        "|---|---|",
        f"| one batch report (throttled tick), ns | {ticking - bare:.0f} |",
        f"| digits MLP, batch 16: s/epoch with live progress (median of {rounds}) | {live:.4f} |",
        f"| the same, epochs reported only | {plain:.4f} |",
        f"| ratio | {live / plain:.3f} |",
        f"| batches per epoch / reported to the display | ~{batches} / {reported} |",
        "",
    ])
    write_table(table, args.output)


if __name__ == "__main__":
    main()
