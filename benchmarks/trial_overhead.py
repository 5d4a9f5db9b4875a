"""Per-trial service overhead: hpo's worker with a zero-cost model against a plain Optuna
script doing the same reports, on the embedded journal store and on PostgreSQL.

Both sides sample the same two parameters with Optuna's default TPE, seeded alike (with the
same history both propose the same points, so TPE's own work, most of a trial here, is the
same), report 10 intermediate values per trial with a median-rule prune check after each, and
train nothing (the value is a constant, so nothing is pruned). The plain script is
``study.optimize`` with an objective of ten ``report``/``should_prune`` calls. hpo's side is
its real trial loop (``hpo.worker.loop.run_worker`` with a stand-in for training): the global
budget, the trial's attributes, heartbeats, the learning-curve artifact and the rest of its
bookkeeping.

To measure at 100 and at 1,000 finished trials without running 1,000 trials first, each side
gets a fresh study prefilled with the same finished trials (random values of the two
parameters, every report 0.5); then the two sides run 20 trials each, taking turns, 5 times
over (so a change in the machine's load hits both). Time per trial: the median gap between
consecutive trial ends within a turn; the table gives the median over the 5 turns.

    uv run python -m benchmarks.trial_overhead            # at 100 and 1,000 finished trials
    uv run python -m benchmarks.trial_overhead --tiny     # a smoke run (the test suite uses it)

It starts a throwaway PostgreSQL server from the installed binaries, or uses ``--storage URL``.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPORTS = 10
SEED = 0  # both sides' TPE: the same history and seed propose the same points
SPEC = """\
name: {name}
budget: {{n_trials: 100000}}
sampler: {{name: tpe, seed: {seed}}}
pruner: {{name: median}}
data: {{name: digits}}
model: {{name: mlp, n_layers: 1, width: 16}}
train: {{epochs: {epochs}}}
search:
  train.lr: {{low: 1.0e-4, high: 1.0e-1, log: true}}
  model.width: {{low: 8, high: 128, log: true}}
"""


def distributions() -> dict:
    from optuna.distributions import FloatDistribution, IntDistribution

    return {"train.lr": FloatDistribution(1e-4, 1e-1, log=True), "model.width": IntDistribution(8, 128, log=True)}


def prefill(study, count: int) -> None:
    """``count`` finished trials, the same for both sides (seeded)."""
    import optuna

    rng = random.Random(0)
    dists = distributions()
    study.add_trials([
        optuna.trial.create_trial(
            params={"train.lr": 10 ** rng.uniform(-4, -1), "model.width": rng.randint(8, 128)},
            distributions=dists, value=0.5, intermediate_values=dict.fromkeys(range(1, REPORTS + 1), 0.5))
        for _ in range(count)
    ])


def open_study(storage: str, name: str):
    import optuna

    from hpo.storage.urls import open_storage, resolve_storage

    return optuna.load_study(study_name=name, storage=open_storage(resolve_storage(storage)))


def hpo_side(storage: str, work: Path, name: str, finished: int) -> Callable[[int], list[float]]:
    """A study made by ``hpo study create`` and prefilled; returns: run N trials -> trial ends."""
    from benchmarks.common import stand_in_trainer
    from hpo.spec import load_spec
    from hpo.storage.urls import resolve_storage
    from hpo.study.studies import create_study
    from hpo.worker.loop import run_worker

    path = work / f"{name}.yaml"
    path.write_text(SPEC.format(name=name, epochs=REPORTS, seed=SEED))
    target = resolve_storage(storage)
    create_study(load_spec(path), target, artifacts=str(work / f"{name}-artifacts"))
    prefill(open_study(storage, name), finished)

    def run(n: int) -> list[float]:
        ends: list[float] = []
        report = run_worker(
            name, target, rank=0, n_trials=n, trainer=stand_in_trainer(),
            progress=lambda event, data: ends.append(time.perf_counter()) if event == "trial_end" else None)
        if report.exit_code:
            raise SystemExit(f"the worker stopped: {report.stop_reason}")
        return ends

    return run


def plain_side(storage: str, name: str, finished: int) -> Callable[[int], list[float]]:
    """The plain Optuna script a user would write, on a prefilled study."""
    import optuna

    if "://" not in storage:
        from optuna.storages.journal import JournalFileBackend

        storage = optuna.storages.JournalStorage(JournalFileBackend(storage))
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize",
                                pruner=optuna.pruners.MedianPruner())
    prefill(study, finished)

    def objective(trial: optuna.Trial) -> float:
        trial.suggest_float("train.lr", 1e-4, 1e-1, log=True)
        trial.suggest_int("model.width", 8, 128, log=True)
        for step in range(1, REPORTS + 1):
            trial.report(0.5, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return 0.5

    def run(n: int) -> list[float]:
        ends: list[float] = []
        study.sampler = optuna.samplers.TPESampler(seed=SEED)  # hpo's worker, too, builds its sampler per run
        study.optimize(objective, n_trials=n, callbacks=[lambda s, t: ends.append(time.perf_counter())])
        return ends

    return run


def median_gap_ms(ends: list[float]) -> float:
    return statistics.median(b - a for a, b in zip(ends, ends[1:])) * 1000


def measure(storage: Callable[[str], str], work: Path, tag: str, mark: int, turns: int,
            per_turn: int) -> tuple[float, float]:
    """(plain, hpo) milliseconds per trial around ``mark`` finished trials."""
    start = max(0, mark - turns * per_turn // 2)  # the turns run from below the mark to above it
    plain = plain_side(storage(f"plain-{mark}"), f"plain-{tag}-{mark}", start)
    ours = hpo_side(storage(f"hpo-{mark}"), work, f"hpo-{tag}-{mark}", start)
    plain_ms, hpo_ms = [], []
    for _ in range(turns):
        plain_ms.append(median_gap_ms(plain(per_turn)))
        hpo_ms.append(median_gap_ms(ours(per_turn)))
    return statistics.median(plain_ms), statistics.median(hpo_ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="30 finished trials, 2 short turns, embedded store only")
    parser.add_argument("--storage", help="a PostgreSQL URL (default: a throwaway server)")
    parser.add_argument("--output", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    from benchmarks.common import machine, postgres, write_table
    from hpo.study.studies import quiet_optuna

    quiet_optuna()
    marks, turns, per_turn = ((30,), 2, 5) if args.tiny else ((100, 1000), 5, 20)
    lines = [
        f"Per-trial time without training: {REPORTS} reports + prune checks per trial, TPE over 2 parameters, "
        f"median rule, one process per side. Machine: {machine()}. Milliseconds per trial: median over "
        f"{turns} turns of {per_turn} trials (each turn's median gap between trial ends), around the given "
        "number of finished trials.",
        "",
        "| storage | finished trials | plain Optuna script (ms) | hpo worker (ms) | hpo / plain |",
        "|---|---:|---:|---:|---:|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        storages = [("embedded journal", lambda study: str(work / f"{study}.journal"))]  # a file each
        with contextlib.nullcontext(None) if args.tiny else postgres(args.storage) as url:
            if url:
                storages.append(("PostgreSQL", lambda study: url))
            for label, where in storages:
                for mark in marks:
                    p, h = measure(where, work, label[:4], mark, turns, per_turn)
                    lines.append(f"| {label} | {mark} | {p:.1f} | {h:.1f} | {h / p:.2f} |")
                    print(lines[-1], flush=True)
    write_table("\n".join(lines), args.output)


if __name__ == "__main__":
    main()
