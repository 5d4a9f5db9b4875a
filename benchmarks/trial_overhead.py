"""Per-trial service overhead: hpo's worker with a zero-cost model against a plain Optuna
script doing the same reports, on the embedded journal store and on PostgreSQL.

Both sides sample the same two parameters with Optuna's default TPE, report 10 intermediate
values per trial with a median-rule prune check after each, and train nothing (the value is
a constant, so nothing is pruned). The plain script is ``study.optimize`` with an objective of
ten ``report``/``should_prune`` calls. hpo's side is its real trial loop (``hpo.worker.run_worker``
with a stand-in for training): the global budget, the trial's attributes, heartbeats, the
learning-curve artifact and the rest of its bookkeeping. One process each, one after the
other, on a fresh study; the time per trial is the median gap between consecutive trial ends
around the 100th and the 1,000th finished trial (trials 90-110 and the last 20).

    uv run python benchmarks/trial_overhead.py            # 1,000 trials per side and storage
    uv run python benchmarks/trial_overhead.py --tiny     # a smoke run (the test suite uses it)

It starts a throwaway PostgreSQL server from the installed binaries, or uses ``--storage URL``.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPORTS = 10
SPEC = """\
name: {name}
budget: {{n_trials: {n_trials}}}
sampler: {{name: tpe}}
pruner: {{name: median}}
data: {{name: digits}}
model: {{name: mlp, n_layers: 1, width: 16}}
train: {{epochs: {epochs}}}
search:
  train.lr: {{low: 1.0e-4, high: 1.0e-1, log: true}}
  model.width: {{low: 8, high: 128, log: true}}
"""


def hpo_ends(storage: str, n_trials: int, work: Path, name: str) -> list[float]:
    from common import stand_in_trainer

    from hpo.spec import load_spec
    from hpo.storage import resolve_storage
    from hpo.study import create_study
    from hpo.worker import run_worker

    path = work / f"{name}.yaml"
    path.write_text(SPEC.format(name=name, n_trials=n_trials, epochs=REPORTS))
    target = resolve_storage(storage)
    create_study(load_spec(path), target, artifacts=str(work / f"{name}-artifacts"))
    ends: list[float] = []
    report = run_worker(name, target, rank=0, trainer=stand_in_trainer(),
                        progress=lambda event, data: ends.append(time.perf_counter()) if event == "trial_end" else None)
    if report.exit_code:
        raise SystemExit(f"the worker stopped: {report.stop_reason}")
    return ends


def plain_ends(storage: str, n_trials: int, name: str) -> list[float]:
    """The plain Optuna script a user would write."""
    import optuna

    if "://" not in storage:
        from optuna.storages.journal import JournalFileBackend

        storage = optuna.storages.JournalStorage(JournalFileBackend(storage))
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize",
                                pruner=optuna.pruners.MedianPruner())

    def objective(trial: optuna.Trial) -> float:
        trial.suggest_float("train.lr", 1e-4, 1e-1, log=True)
        trial.suggest_int("model.width", 8, 128, log=True)
        for step in range(1, REPORTS + 1):
            trial.report(0.5, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return 0.5

    ends: list[float] = []
    study.optimize(objective, n_trials=n_trials, callbacks=[lambda s, t: ends.append(time.perf_counter())])
    return ends


def per_trial_ms(ends: list[float], around: int) -> float:
    """Median gap between consecutive trial ends for the 20 trials around ``around``."""
    lo = max(1, min(around - 10, len(ends) - 20))
    gaps = [b - a for a, b in zip(ends[lo - 1:lo + 19], ends[lo:lo + 20])]
    return statistics.median(gaps) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="30 trials, embedded store only")
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--storage", help="a PostgreSQL URL (default: a throwaway server)")
    parser.add_argument("--output", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from common import machine, postgres, write_table

    from hpo.study import quiet_optuna

    quiet_optuna()
    n = 30 if args.tiny else args.trials
    marks = [m for m in (100, 1000) if m <= n] or [n]
    lines = [
        f"Per-trial time without training: {REPORTS} reports + prune checks per trial, TPE over 2 parameters, "
        f"median rule, one process, {n} trials per run. Machine: {machine()}. Milliseconds per trial "
        "(median gap between trial ends around the given trial count).",
        "",
        "| storage | finished trials | plain Optuna script (ms) | hpo worker (ms) | hpo / plain |",
        "|---|---:|---:|---:|---:|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        storages = [("embedded journal", lambda tag: str(work / f"{tag}.journal"))]
        with contextlib.nullcontext(None) if args.tiny else postgres(args.storage) as url:
            if url:
                storages.append(("PostgreSQL", lambda tag: url))
            for label, where in storages:
                plain = plain_ends(where("plain"), n, f"plain-{label[:4]}")
                ours = hpo_ends(where("hpo"), n, work, f"hpo-{label[:4]}")
                for mark in marks:
                    p, h = per_trial_ms(plain, mark), per_trial_ms(ours, mark)
                    lines.append(f"| {label} | {mark} | {p:.1f} | {h:.1f} | {h / p:.2f} |")
                    print(lines[-1], flush=True)
    write_table("\n".join(lines), args.output)


if __name__ == "__main__":
    main()
