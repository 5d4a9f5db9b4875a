"""Warm start: how many trials a study started from another one's results needs to reach that
study's best, against a study started cold.

The task is the digits CNN space of search_spaces/digits_cnn.yaml with a reduced training set
(``data.train_fraction``, default 0.1, as benchmarks/search_efficiency.py: full digits sits at
its ceiling) and a few epochs, no pruning, TPE. A parent study runs --parent-trials trials
(sampler seed 0). Then, for each seed s, two studies on the same spec with ``sampler.seed`` =
s + 1 and ``train.seed`` = s + 1 (a new initialisation, so re-running the parent's best
configuration does not simply give back its value): one created with ``--warm-start parent
--top K``, one cold. Each runs trial by trial, through hpo's real worker loop
(``hpo.worker.loop.run_worker`` in this process, one embedded journal for all), until a trial of
its own reaches the parent's best validation accuracy or --max-trials trials have run (a
third study per seed is warm-started with --top 0: the parent's trials for the sampler only,
nothing queued). The
table gives, per seed, the trials needed (its own trials only: the warm study's added trials
are not counted), the median over seeds, and "not reached" honestly where the cap came first.

    uv run python -m benchmarks.warm_start            # 20 parent trials, 5 seeds, cap 30
    uv run python -m benchmarks.warm_start --tiny     # a smoke run (the test suite uses it)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

SPEC = """\
name: {name}
budget: {{n_trials: {n_trials}}}
sampler: {{name: tpe, seed: {seed}}}
pruner: {{name: none}}
data: {{name: digits, val_fraction: 0.2, test_fraction: 0.2, split_seed: 0, train_fraction: {fraction}}}
model:
  {{name: cnn, n_blocks: 2, filters: 32, kernel_size: 3, pool: max, batch_norm: true, dropout: 0.0,
   fc_width: 64, activation: relu, init: default}}
train:
  {{epochs: {epochs}, batch_size: 64, optimizer: adam, lr: 1.0e-3, momentum: 0.9, nesterov: false,
   weight_decay: 0.0, seed: {train_seed}}}
search:
  train.batch_size: {{choices: [32, 64, 128]}}
  train.lr: {{low: 1.0e-4, high: 3.0e-2, log: true}}
  train.optimizer: {{choices: [sgd, adam, adamax]}}
  train.momentum: {{low: 0.8, high: 0.99, when: {{train.optimizer: sgd}}}}
  train.nesterov: {{choices: [true, false], when: {{train.optimizer: sgd}}}}
  model.n_blocks: {{low: 1, high: 3}}
  model.filters: {{low: 8, high: 64, log: true, repeat: model.n_blocks}}
  model.kernel_size: {{choices: [3, 5]}}
  model.dropout: {{low: 0.0, high: 0.5}}
  model.init: {{choices: [default, kaiming_normal, xavier_normal]}}
"""


def _spec(work: Path, name: str, *, n_trials: int, seed: int, args: argparse.Namespace):
    from hpo.spec import load_spec

    path = work / f"{name}.yaml"
    path.write_text(SPEC.format(name=name, n_trials=n_trials, seed=seed, fraction=args.train_fraction,
                                epochs=args.epochs, train_seed=seed))
    return load_spec(path)


def _own_values(study) -> list[float]:
    """The study's own complete trials' values, in trial-number order (added ones left out)."""
    from optuna.trial import TrialState

    from hpo.study.studies import own_trials

    trials = sorted(own_trials(study.get_trials(deepcopy=False)), key=lambda t: t.number)
    return [t.value for t in trials if t.state == TrialState.COMPLETE]


def trials_to_reach(name: str, target, goal: float, cap: int) -> int | None:
    """Run study ``name`` one trial at a time; the number of its own trials when one first
    reaches ``goal``, or None after ``cap`` trials."""
    from hpo.study.studies import load_study
    from hpo.worker.loop import run_worker

    for count in range(1, cap + 1):
        run_worker(name, target, n_trials=1, rank=0)
        values = _own_values(load_study(name, target).study)
        if values and max(values) >= goal - 1e-12:
            return count
    return None


def run(args: argparse.Namespace) -> str:
    from hpo.api.studies import create_study
    from hpo.storage.urls import resolve_storage
    from hpo.study.studies import load_study, quiet_optuna
    from hpo.worker.loop import run_worker

    quiet_optuna()
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        target = resolve_storage(str(work / "studies.journal"))
        create_study(_spec(work, "parent", n_trials=args.parent_trials, seed=0, args=args), target,
                     artifacts=str(work / "artifacts"))
        run_worker("parent", target, rank=0)
        goal = max(_own_values(load_study("parent", target).study))
        rows = []
        for seed in range(args.seeds):
            cells = {}
            for kind, top in _starts(args):
                name = f"{kind.split(',')[0]}-{top}-{seed}"
                spec = _spec(work, name, n_trials=args.max_trials, seed=seed + 1, args=args)
                made = create_study(spec, target, artifacts=str(work / "artifacts"),
                                    warm_start="parent" if top is not None else None, top=top or 0)
                if made.warm_start is not None:
                    cells["added"] = made.warm_start.added
                cells[kind] = trials_to_reach(name, target, goal, args.max_trials)
            rows.append(cells)
    return _table(args, goal, rows, time.monotonic() - started)


def _starts(args: argparse.Namespace) -> list[tuple[str, int | None]]:
    """(row label, --top or None for a cold start): the warm start with --top 0 shows what the
    added trials alone do for the sampler, without the parent's best configurations queued."""
    return [("warm", args.top), ("warm, --top 0", 0), ("cold", None)]


def _shown(value: int | None) -> str:
    return "not reached" if value is None else str(value)


def _median(values: list[int | None], cap: int) -> str:
    """The median, counting "not reached" as above the cap (so it is honest when it lands there)."""
    ranked = sorted(v if v is not None else cap + 1 for v in values)
    middle = statistics.median_low(ranked)
    return "not reached" if middle > cap else str(middle)


def _table(args: argparse.Namespace, goal: float, rows: list[dict], seconds: float) -> str:
    from benchmarks.common import machine

    lines = [
        f"Warm start (--warm-start parent --top {args.top}) against a cold start: digits CNN space, "
        f"train_fraction {args.train_fraction}, {args.epochs} epochs, TPE, no pruning; parent "
        f"{args.parent_trials} trials, best val accuracy {goal:.4f}; cap {args.max_trials} trials; "
        f"{machine()}; {seconds:.0f} s in all.",
        "",
        "| start | trials to reach the parent's best, per seed | median | seeds reaching |",
        "|---|---|---|---|",
    ]
    for kind, _top in _starts(args):
        values = [row[kind] for row in rows]
        reached = sum(v is not None for v in values)
        lines.append(f"| {kind} | {', '.join(map(_shown, values))} | {_median(values, args.max_trials)} | "
                     f"{reached}/{len(values)} |")
    added = sorted({row.get("added", 0) for row in rows})
    lines += ["", f"The warm studies were given {', '.join(map(str, added))} of the parent's trials for the "
              "sampler (not counted above)."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parent-trials", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--max-trials", type=int, default=30, help="cap per study")
    parser.add_argument("--top", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train-fraction", type=float, default=0.1)
    parser.add_argument("--tiny", action="store_true", help="a smoke run: 3 parent trials, 1 seed, cap 2, 1 epoch")
    parser.add_argument("--output", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    if args.tiny:
        args.parent_trials, args.seeds, args.max_trials, args.epochs = 3, 1, 2, 1
    from benchmarks.common import write_table

    write_table(run(args), args.output)


if __name__ == "__main__":
    main()
