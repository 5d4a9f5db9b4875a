"""Record the curves table: every configuration of benchmarks/curves/space.py trained to its
full epochs with every seed, through hpo's own training loop (``hpo.training.train_model``,
what a worker calls for a trial), keeping per-epoch validation accuracy and loss, training
loss, seconds and the parameter count.

    uv run python -m benchmarks.curves.record              # record (resumable), then pack
    uv run python -m benchmarks.curves.record --pack-only  # pack what is recorded

Recording appends one JSON line per configuration (all its seeds) to
benchmarks/curves/recording/part-<worker>.jsonl (ignored by git); a restart skips what is
there. ``--workers`` processes share the configurations (one torch thread each, so two fill
two cores). Packing writes the compact table that ships: benchmarks/curves/digits_cnn.npz.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

from benchmarks.curves import space

HERE = Path(__file__).parent
RECORDING = HERE / "recording"
TABLE = HERE / "digits_cnn.npz"


class _EpochClock:
    """A reporter that never prunes and keeps each epoch's metrics with the process CPU time
    it took: under another load the wall time stretches, the CPU time of a one-thread
    process much less (the replay accounts time by it)."""

    def __init__(self) -> None:
        self.metrics: list[Any] = []
        self.cpu_seconds: list[float] = []
        self._mark = time.process_time()

    def report(self, metrics: Any) -> bool:
        now = time.process_time()
        self.metrics.append(metrics)
        self.cpu_seconds.append(now - self._mark)
        self._mark = now
        return False


def train_once(config: dict[str, Any], seed: int) -> tuple[dict[str, Any], int]:
    """One configuration with one seed: its per-epoch record, and its parameter count."""
    from hpo.errors import TrainingError
    from hpo.models.registry import parse_model_config
    from hpo.training import DataConfig, TrainConfig, train_model

    data, model, train = space.hpo_sections(config, seed)
    clock = _EpochClock()
    params = 0
    status = "complete"
    try:
        result = train_model(DataConfig.model_validate(data), parse_model_config(model),
                             TrainConfig.model_validate(train), reporter=clock)
        params = result.params_total
    except TrainingError:  # a non-finite loss: the trial ends (steered away); the epochs before it stand
        status = "fail"
    missing = [math.nan] * (space.EPOCHS - len(clock.metrics))
    return {
        "seed": seed,
        "status": status,
        "val_accuracy": [m.val_accuracy for m in clock.metrics] + missing,
        "val_loss": [m.val_loss for m in clock.metrics] + missing,
        "train_loss": [m.train_loss for m in clock.metrics] + missing,
        "wall_seconds": [m.seconds for m in clock.metrics] + missing,
        "cpu_seconds": clock.cpu_seconds + missing,
    }, params


def parameter_count(config: dict[str, Any]) -> int:
    """The model's parameters, built as a trial builds it (for a configuration whose every
    seed failed before the count was returned): digits are 1x8x8 images of 10 classes."""
    from hpo.models.registry import count_parameters, create_model, parse_model_config

    _, model, _ = space.hpo_sections(config, seed=0)
    return count_parameters(create_model(parse_model_config(model), (1, 8, 8), 10))[1]


def _parts() -> list[Path]:
    return sorted(RECORDING.glob("part-*.jsonl"))


def recorded() -> dict[int, dict[str, Any]]:
    """What the parts hold, by configuration index (a torn last line is left out)."""
    rows: dict[int, dict[str, Any]] = {}
    for part in _parts():
        for line in part.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            rows[row["index"]] = row
    return rows


def _record_share(worker: int, workers: int, todo: list[int]) -> None:
    import torch

    from hpo.study.studies import quiet_optuna

    quiet_optuna()
    torch.set_num_threads(1)
    configs = list(space.configurations())
    mine = [i for i in todo if i % workers == worker]
    train_once(configs[0], 0)  # once, unrecorded: the dataset and torch's lazy imports load
    started = time.perf_counter()
    with (RECORDING / f"part-{worker}.jsonl").open("a") as out:
        for done, index in enumerate(mine, 1):
            runs, params = zip(*(train_once(configs[index], seed) for seed in space.SEEDS))
            row = {"index": index, "config": configs[index], "params": max(params), "runs": list(runs)}
            out.write(json.dumps(row) + "\n")
            out.flush()
            if done % 25 == 0 or done == len(mine):
                rate = done / (time.perf_counter() - started)
                print(f"worker {worker}: {done}/{len(mine)} configurations, {rate:.2f}/s, "
                      f"{(len(mine) - done) / rate / 60:.1f} min left", flush=True)


def record(workers: int) -> None:
    RECORDING.mkdir(exist_ok=True)
    total = sum(1 for _ in space.configurations())
    done = recorded()
    todo = [i for i in range(total) if i not in done]
    print(f"{total} configurations x {len(space.SEEDS)} seeds x {space.EPOCHS} epochs: "
          f"{len(done)} recorded, {len(todo)} to go on {workers} workers", flush=True)
    if not todo:
        return
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_record_share, args=(w, workers, todo)) for w in range(workers)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    if any(proc.exitcode for proc in procs):
        raise SystemExit("a recording worker failed: run the command again to resume")


def pack(path: Path = TABLE) -> None:
    """The recorded rows as one compressed table (see table.py for its arrays)."""
    import numpy as np

    from benchmarks.curves.table import ARRAYS, CurveTable

    rows = recorded()
    configs = list(space.configurations())
    missing = [i for i in range(len(configs)) if i not in rows]
    if missing:
        raise SystemExit(f"{len(missing)} of {len(configs)} configurations are not recorded yet")
    runs = [rows[i]["runs"] for i in range(len(configs))]
    arrays = {name: np.array([[run[name] for run in r] for r in runs], dtype=np.float32) for name in ARRAYS}
    meta = {"space": {n: list(v) for n, v in space.VALUES.items()}, "conditions": space.CONDITIONS,
            "data": space.DATA, "model": space.MODEL, "train": space.TRAIN, "seeds": list(space.SEEDS),
            "epochs": space.EPOCHS}
    CurveTable(configs=configs, meta=meta, failed=np.array([[run["status"] == "fail" for run in r] for r in runs]),
               params=np.array([rows[i]["params"] or parameter_count(configs[i]) for i in range(len(configs))],
                               dtype=np.int64),
               **arrays).save(path)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--pack-only", action="store_true")
    args = parser.parse_args()
    if not args.pack_only:
        record(args.workers)
    pack()


if __name__ == "__main__":
    main()
