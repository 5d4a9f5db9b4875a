"""Trial start-up: time from a trial being asked to its first training step, for the digits
CNN on the CPU, on the embedded store and on PostgreSQL.

Start-up is everything between ``study.ask()`` and the end of the first optimiser step:
sampling, the trial's storage writes, the dataset (prepared once per worker and reused),
building the model and the optimiser, and the first batch. Each trial records it as the
user attribute ``startup_seconds``; this runs one in-process worker (``hpo.worker.loop.run_worker``)
over the digits CNN space (search_spaces/digits_cnn.yaml, 1 epoch per trial, no pruning) and
reports the first trial of the worker apart from the later ones. The worker prepares the
fixed dataset and torch's optimiser machinery before its first trial (``hpo.worker.loop._warm_up``);
``--no-warm-up`` shows what the first trial costs without that.

    uv run python -m benchmarks.trial_startup            # 20 trials per storage
    uv run python -m benchmarks.trial_startup --tiny     # a smoke run (the test suite uses it)

It starts a throwaway PostgreSQL server from the installed binaries, or uses ``--storage URL``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_MS = 100


def startups(storage: str, n_trials: int, work: Path, name: str, warm: bool) -> list[float]:
    """``startup_seconds`` of each trial, in trial order, in milliseconds."""
    import optuna

    import hpo.worker.loop
    from hpo.spec import load_spec
    from hpo.storage.urls import open_storage, resolve_storage
    from hpo.study.studies import create_study
    from hpo.worker.loop import run_worker

    text = (ROOT / "search_spaces" / "digits_cnn.yaml").read_text()
    spec_path = work / f"{name}.yaml"
    spec_path.write_text(text)
    spec = load_spec(spec_path).model_copy(update={"name": name})
    spec = spec.model_copy(update={
        "budget": spec.budget.model_copy(update={"n_trials": n_trials}),
        "train": spec.train.model_copy(update={"epochs": 1}),
        "search": {k: v for k, v in spec.search.items() if k != "train.epochs"},
        "pruner": spec.pruner.__class__.model_validate({"name": spec.pruner.name}),
    })
    target = resolve_storage(storage)
    create_study(spec, target, artifacts=str(work / f"{name}-artifacts"))
    if not warm:
        hpo.worker.loop._warm_up = lambda spec, device: None  # what a worker without it does
    report = run_worker(name, target, rank=0)
    if report.exit_code:
        raise SystemExit(f"the worker stopped: {report.stop_reason}")
    trials = optuna.load_study(study_name=name, storage=open_storage(target)).get_trials(deepcopy=False)
    return [t.user_attrs["startup_seconds"] * 1000 for t in trials if "startup_seconds" in t.user_attrs]


def row(label: str, ms: list[float]) -> str:
    later = ms[1:]
    median = statistics.median(later)
    p90 = sorted(later)[max(0, int(round(0.9 * len(later))) - 1)]
    met = "yes" if median <= GOAL_MS else "no"
    return f"| {label} | {ms[0]:.0f} | {median:.0f} | {p90:.0f} | {len(later)} | {met} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="3 trials, embedded store only")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--storage", help="a PostgreSQL URL (default: a throwaway server)")
    parser.add_argument("--no-warm-up", action="store_true", help="the worker skips its warm-up")
    parser.add_argument("--output", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    from benchmarks.common import machine, postgres, write_table
    from hpo.study.studies import quiet_optuna

    quiet_optuna()
    n = 3 if args.tiny else args.trials
    warm = not args.no_warm_up
    lines = [
        f"Trial start-up (ask to first optimiser step), digits CNN space, 1 epoch per trial, {n} trials, "
        f"one worker, warm-up {'on' if warm else 'off'}. Machine: {machine()}. Goal: <= {GOAL_MS} ms after "
        "the first trial.",
        "",
        "| storage | first trial (ms) | later trials, median (ms) | p90 (ms) | later trials | goal met |",
        "|---|---:|---:|---:|---:|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        lines.append(row("embedded journal", startups(str(work / "studies.journal"), n, work, "startup-journal", warm)))
        if not args.tiny:
            with postgres(args.storage) as url:
                lines.append(row("PostgreSQL", startups(url, n, work, "startup-postgres", warm)))
    write_table("\n".join(lines), args.output)


if __name__ == "__main__":
    main()
