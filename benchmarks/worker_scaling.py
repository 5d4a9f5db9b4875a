"""Trial throughput of 1, 2, 4, 8 and 16 ``hpo`` workers on one PostgreSQL study, and the
cost of one pruning check with 64 running trials x 100 reported epochs.

Throughput: every worker runs hpo's real trial loop (``hpo.worker.loop.run_worker``: sampling,
ask/tell, the global budget, one report and prune check per epoch, heartbeats, the periodic
sweep), with a stand-in for training that sleeps ``--epoch-seconds`` per epoch. Sleeping
trials let 2 cores host 16 workers; what they measure is the service's coordination, not
the model. Trial artifacts (pictures, checkpoints) are switched off for the run, as they would
measure the disk. The workers start together (a barrier after their imports); throughput is
finished trials over the time from the first trial's start to the last one's end, and the
parallel efficiency is that over N x the throughput of one ideal worker (1 / trial length);
the last column divides by N x the measured throughput of one worker instead.

Pruning check: one ``should_prune`` as Optuna's cached storage does it (it re-reads every
running trial with all its intermediate values) against hpo's pruner view (finished trials
kept, running trials read without their curves), for Hyperband (hpo's default until issue 17) and the
median rule, the median over repeated calls after a warm-up call.

    uv run python -m benchmarks.worker_scaling            # 1..16 workers, trials of 8 s, 3 repetitions
    uv run python -m benchmarks.worker_scaling --tiny     # a smoke run (the test suite uses it)

It starts a throwaway PostgreSQL server from the installed binaries (tests/postgres.py), or
uses ``--storage URL``. Prints Markdown tables (and writes them with --output FILE).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEC = """\
name: {name}
objective: {{metric: val_accuracy, direction: maximize}}
budget: {{n_trials: {n_trials}}}
pruner: {{name: median, n_startup_trials: 2}}
data: {{name: digits}}
model: {{name: mlp, n_layers: 1, width: 16}}
train: {{epochs: {epochs}, batch_size: 128}}
search:
  train.lr: {{low: 1.0e-4, high: 1.0e-1, log: true}}
  model.width: {{low: 8, high: 128, log: true}}
"""


def child(args: argparse.Namespace) -> None:
    """One worker: import everything, wait for the others, run the loop."""
    import hpo.training.loop  # noqa: F401 - imported before the barrier, as a worker does at start
    from benchmarks.common import stand_in_trainer
    from hpo.storage.urls import resolve_storage
    from hpo.worker.loop import run_worker
    Path(args.ready).touch()
    while not Path(args.go).exists():
        time.sleep(0.01)
    report = run_worker(args.study, resolve_storage(os.environ["HPO_STORAGE"]), rank=args.rank,
                        trainer=stand_in_trainer(args.epoch_seconds))
    if report.exit_code:
        print(f"worker {args.rank}: {report.stop_reason}", file=sys.stderr)
    sys.exit(report.exit_code)


def throughput(url: str, n_workers: int, *, trials_per_worker: int, epochs: int, epoch_seconds: float,
               work: Path, tag: str) -> tuple[float, float, int]:
    """Finished trials per second with ``n_workers`` workers: over the whole run, and summed
    over the workers, each over its own span (without the workers' start skew, and without a
    worker that ran one trial more than the others lengthening the run); and the most
    trials one worker ran."""
    import optuna

    from hpo.spec import load_spec
    from hpo.storage.urls import resolve_storage
    from hpo.study.attrs import ARTIFACT_STORE as STORE_ATTR
    from hpo.study.attrs import WORKER, WorkerIdentity
    from hpo.study.studies import create_study

    name = f"scale-{tag}-{n_workers}"
    spec_path = work / f"{name}.yaml"
    spec_path.write_text(SPEC.format(name=name, n_trials=n_workers * trials_per_worker, epochs=epochs))
    study, _ = create_study(load_spec(spec_path), resolve_storage(url))
    study.set_user_attr(STORE_ATTR, None)  # no plots, no checkpoints: see the module docstring
    go = work / f"{name}.go"
    ready = [work / f"{name}.ready{i}" for i in range(n_workers)]
    # The workers run in the scratch directory, so they find this package through PYTHONPATH.
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, HPO_STORAGE=url, HPO_THREADS="1", PYTHONPATH=pythonpath)
    procs = [subprocess.Popen([sys.executable, "-m", "benchmarks.worker_scaling", "--child", "--study", name,
                               "--rank", str(i), "--ready", str(ready[i]), "--go", str(go),
                               "--epoch-seconds", str(epoch_seconds)],
                              env=env, cwd=work)
             for i in range(n_workers)]
    while not all(path.exists() for path in ready):
        if any(p.poll() is not None for p in procs):
            raise SystemExit(f"a worker exited before the start: {[p.returncode for p in procs]}")
        time.sleep(0.05)
    go.touch()
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"workers failed: exit codes {codes}")
    storage = optuna.storages.RDBStorage(url)
    trials = [t for t in optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
              if t.state == optuna.trial.TrialState.COMPLETE]
    storage.engine.dispose()
    span = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
    by_worker: dict[WorkerIdentity | None, list] = {}
    for t in trials:
        by_worker.setdefault(WorkerIdentity.from_attr(t.user_attrs[WORKER]), []).append(t)
    steady = sum(len(own) / (max(t.datetime_complete for t in own) - min(t.datetime_start for t in own)).total_seconds()
                 for own in by_worker.values())
    return len(trials) / span, steady, max(len(own) for own in by_worker.values())


def prune_check_cost(url: str, *, running: int, finished: int, epochs: int,
                     calls: int) -> list[tuple[str, float, float]]:
    """(pruner, ms per should_prune through Optuna's cached storage, ms through hpo's view)."""
    import optuna
    from optuna.trial import TrialState

    from hpo.storage.proxies import light_study
    from hpo.storage.urls import resolve_storage

    results = []
    for label, pruner in (("hyperband", optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs)),
                          ("median", optuna.pruners.MedianPruner())):
        name = f"prune-cost-{label}-{time.monotonic_ns()}"
        rdb = optuna.storages.RDBStorage(url)
        study = optuna.create_study(study_name=name, storage=rdb, pruner=pruner)
        distribution = {"x": optuna.distributions.FloatDistribution(0, 1)}
        for i in range(finished + running):  # one transaction per trial, curve included
            x = (i * 0.618) % 1
            study.add_trial(optuna.trial.create_trial(
                state=TrialState.COMPLETE if i < finished else TrialState.RUNNING,
                value=x * epochs if i < finished else None,
                params={"x": x}, distributions=distribution,
                intermediate_values={step: x * step for step in range(1, epochs + 1)},
            ))
        live = study.get_trials(states=(TrialState.RUNNING,))
        assert len(live) == running

        # Each call judges a different running trial that has not been judged before: a
        # trial judged again at the same step returns early (successive halving finds its
        # rungs done) and would time nothing. The two paths get disjoint trials.
        def timed(check, probes) -> float:
            check(probes[0])  # warm-up: the first call reads the finished trials once, on both paths
            samples = []
            for probe in probes[1:]:
                started = time.perf_counter()
                check(probe)
                samples.append(time.perf_counter() - started)
            return statistics.median(samples) * 1000

        half = len(live) // 2
        # Optuna's own path: a worker's study object over the cached storage.
        loaded = optuna.load_study(study_name=name, storage=optuna.storages.RDBStorage(url), pruner=pruner)
        optuna_ms = timed(lambda t, loaded=loaded: optuna.trial.Trial(loaded, t._trial_id).should_prune(),
                          live[:min(half, calls + 1)])
        # hpo's path (hpo.worker.pruning.TrialReporter.report): the pruner reads the view.
        from hpo.storage.urls import open_storage

        ours = optuna.load_study(study_name=name, storage=open_storage(resolve_storage(url), reconnect_for=60),
                                 pruner=pruner)
        viewed = light_study(ours)
        hpo_ms = timed(lambda t, pruner=pruner, viewed=viewed, ours=ours: pruner.prune(
                           viewed, ours._storage.get_trial(t._trial_id)),
                       live[half:half + min(half, calls + 1)])
        results.append((label, optuna_ms, hpo_ms))
    return results


def run(url: str, args: argparse.Namespace) -> str:
    counts = [1, 2] if args.tiny else [int(n) for n in args.workers.split(",")]
    repeats = 1 if args.tiny else args.repeats
    epochs, epoch_seconds, per_worker = ((3, 0.05, 2) if args.tiny
                                         else (args.epochs, args.epoch_seconds, args.trials_per_worker))
    trial_seconds = epochs * epoch_seconds
    from benchmarks.common import machine

    lines = [
        f"Trial throughput on PostgreSQL: sleeping trials of {epochs} epochs x {epoch_seconds:g} s "
        f"= {trial_seconds:g} s, {per_worker} trials per worker, TPE + median pruner (a check per epoch), "
        f"median of {repeats}. Machine: {machine()}.",
        "",
        "| workers | trials/s (median) | ideal trials/s | parallel efficiency | vs workers x 1 worker's rate "
        "| per-worker spans: efficiency | most trials in one worker |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    single: float | None = None  # one worker's rate: the second column of efficiency
    with tempfile.TemporaryDirectory() as tmp:
        for n in counts:
            runs = [throughput(url, n, trials_per_worker=per_worker, epochs=epochs, epoch_seconds=epoch_seconds,
                               work=Path(tmp), tag=f"r{r}") for r in range(repeats)]
            rate, ideal = statistics.median(r[0] for r in runs), n / trial_seconds
            steady, most = statistics.median(r[1] for r in runs), max(r[2] for r in runs)
            single = single or rate
            lines.append(f"| {n} | {rate:.2f} | {ideal:.2f} | {rate / ideal:.0%} | {rate / (n * single):.0%} "
                         f"| {steady / ideal:.0%} | {most} |")
            print(lines[-1], flush=True)
    running, finished, steps = (8, 8, 10) if args.tiny else (64, 100, 100)
    lines += [
        "",
        f"One `should_prune` with {running} running trials x {steps} reported epochs (and {finished} finished "
        f"trials of {steps} epochs), median of {min(args.calls, running // 2 - 1)} calls, each judging a "
        "running trial at its last epoch for the first time:",
        "",
        "| pruner | Optuna's cached storage (ms) | hpo's pruner view (ms) | ratio |",
        "|---|---:|---:|---:|",
    ]
    for label, optuna_ms, hpo_ms in prune_check_cost(url, running=running, finished=finished, epochs=steps,
                                                      calls=args.calls):
        lines.append(f"| {label} | {optuna_ms:.1f} | {hpo_ms:.1f} | {optuna_ms / hpo_ms:.1f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="1 and 2 workers, short trials, 1 repetition")
    parser.add_argument("--storage", help="a PostgreSQL URL (default: a throwaway server)")
    parser.add_argument("--workers", default="1,2,4,8,16", help="worker counts, comma-separated (1 first)")
    # Trials of 8 s (8 epochs of 1 s, mostly waiting, as a GPU trial's host process is): the
    # default run takes about 8 minutes; --epochs 10 --epoch-seconds 0.2 --trials-per-worker 6
    # --repeats 5 is the earlier setting of 2 s trials (28 minutes).
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--epoch-seconds", type=float, default=1.0)
    parser.add_argument("--trials-per-worker", type=int, default=3)
    parser.add_argument("--calls", type=int, default=20,
                        help="should_prune calls timed per path (each on its own running trial: at most 31)")
    parser.add_argument("--output", type=Path, help="also write the tables to this file")
    # The worker processes this script starts:
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--study", help=argparse.SUPPRESS)
    parser.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--ready", help=argparse.SUPPRESS)
    parser.add_argument("--go", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    from benchmarks.common import postgres, write_table
    from hpo.study.studies import quiet_optuna

    quiet_optuna()
    with postgres(args.storage) as url:
        table = run(url, args)
    write_table(table, args.output)


if __name__ == "__main__":
    main()
