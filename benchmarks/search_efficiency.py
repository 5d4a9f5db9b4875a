"""Search efficiency at equal compute: hpo's default sampler + pruner against random search
with every trial trained to full epochs (a Talos-style scan) and against TPE without pruning,
on a digits search space (--space: the CNN space or an MLP one) with a reduced training set.

Full digits sits at its ceiling (random search reaches ~0.99 validation accuracy within a few
trials), so the task is digits with ``data.train_fraction`` (default 0.1: ~110 training images;
validation and test stay whole), where bad configurations score far below good ones. ``cnn`` is
the space and fixed keys of search_spaces/digits_cnn.yaml (bad configurations 0.1-0.5, good ones
~0.9). ``mlp`` is an MLP over lr, batch size, optimizer (+ momentum for sgd), depth, one width per
layer, dropout, activation and init, after search_spaces/digits_mlp.yaml (24 random
configurations at 12 epochs scored 0.09-0.89, median 0.46; a sigmoid net or a small lr mostly
stays near chance, 0.1-0.2). Every strategy runs through hpo's real worker loop
(``hpo.worker.loop.run_worker``: one in-process worker, rank 0, a fresh study on an embedded
journal per run); seed s sets ``sampler.seed`` (1000 + s for random search: see REFERENCE_SEED),
the split and ``train.seed`` stay fixed.

Budgets, per seed: random search runs first until it has trained E = --full-trials x epochs
epochs; its wall time becomes T. Every other strategy runs until it has used both E epochs
and T seconds. Prefixes of each run (trials in the order they finished) are then compared:
the best validation accuracy of a completed trial within f x E epochs (pruned trials' epochs
count) and within f x T seconds, the epochs and seconds to reach a target, and the test
accuracy of the best trial within E (its final weights from the study's artifact store).

    uv run python -m benchmarks.search_efficiency             # default, random, tpe; 5 seeds; cnn space
    uv run python -m benchmarks.search_efficiency --space mlp # the same on the MLP space
    uv run python -m benchmarks.search_efficiency --strategies "tpe+median,tpe(n_startup_trials=5)+hyperband"
    uv run python -m benchmarks.search_efficiency --fraction 0.2 --epochs 8   # data.train_fraction, train.epochs
    uv run python -m benchmarks.search_efficiency --tiny      # a smoke run (the test suite uses it; --space too)

A strategy is ``default`` (a spec naming no pruner: hpo's TPE + successive halving; TPE +
Hyperband, ``tpe+hyperband``, before BENCHMARKS.md's search replay), ``random`` or
``tpe`` (no pruning; both samplers with hpo's defaults, so TPE is multivariate with the
constant liar: ``tpe(multivariate=false,group=false,constant_liar=false)`` is Optuna's own
default), or SAMPLER[(k=v,...)]+PRUNER[(k=v,...)] with hpo's option names. Random search
always runs: it sets T and the target of the goal line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

FRACTIONS = (("1/8", 1 / 8), ("1/4", 1 / 4), ("1/2", 1 / 2), ("all", 1.0))
GOAL = 1 / 4  # the default reaches random search's final best within this share of E
# TPE draws its first n_startup_trials with a RandomSampler of its own seed: with the same seed
# they would be random search's first trials, and the target (random search's final best) would
# often be handed to the TPE strategies. Random search draws from seeds of its own.
REFERENCE_SEED = 1000
# What every space shares: the study's name, strategy sections, the task and the fixed train keys.
HEAD = """\
name: {name}
budget: {{n_trials: 100000}}
{strategy}
data: {{name: digits, val_fraction: 0.2, test_fraction: 0.2, split_seed: 0, train_fraction: {fraction}}}
"""
TRAIN = """\
train:
  {{epochs: {epochs}, batch_size: 64, optimizer: adam, lr: 1.0e-3, momentum: 0.9, nesterov: false,
   weight_decay: 0.0, seed: 0}}
"""


@dataclass(frozen=True)
class Space:
    title: str  # what the output's header calls it
    spec: str  # the spec template: {name}, {strategy}, {fraction} and {epochs} to fill in


SPACES = {
    "cnn": Space("digits CNN space (search_spaces/digits_cnn.yaml)", HEAD + """\
model:
  {{name: cnn, n_blocks: 2, filters: 32, kernel_size: 3, pool: max, batch_norm: true, dropout: 0.0,
   fc_width: 64, activation: relu, init: default}}
""" + TRAIN + """\
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
"""),
    # digits_mlp.yaml's ranges, less its weight decay, batch norm and nesterov, plus init; sigmoid
    # (near chance at this size) and widths down to 16 give the samplers dead regions to learn.
    "mlp": Space("digits MLP space (after search_spaces/digits_mlp.yaml)", HEAD + """\
model:
  {{name: mlp, n_layers: 2, width: 128, activation: relu, dropout: 0.0, batch_norm: false, init: default}}
""" + TRAIN + """\
search:
  train.batch_size: {{choices: [16, 32, 64, 128]}}
  train.lr: {{low: 1.0e-4, high: 1.0e-1, log: true}}
  train.optimizer: {{choices: [sgd, adam, adamax]}}
  train.momentum: {{low: 0.5, high: 0.99, when: {{train.optimizer: sgd}}}}
  model.n_layers: {{low: 1, high: 4}}
  model.width: {{low: 16, high: 512, log: true, repeat: model.n_layers}}
  model.dropout: {{low: 0.0, high: 0.5}}
  model.activation: {{choices: [relu, gelu, tanh, sigmoid]}}
  model.init: {{choices: [default, kaiming_normal, xavier_normal]}}
"""),
}
# (sampler, pruner) sections; a pruner of None leaves the section out: hpo's default.
NAMED = {
    "default": ({}, None),  # sampler: {seed: S}, no pruner: what a spec naming neither gets
    "random": ({"name": "random"}, {"name": "none"}),
    "tpe": ({"name": "tpe"}, {"name": "none"}),
}


def strategy_sections(label: str) -> tuple[dict, dict | None]:
    """``default`` | ``random`` | ``tpe`` | SAMPLER[(k=v,...)]+PRUNER[(k=v,...)]."""
    if label in NAMED:
        return NAMED[label]
    sampler, _, pruner = label.partition("+")
    return options(sampler), options(pruner or "none")


def options(part: str) -> dict:
    match = re.fullmatch(r"(\w+)(?:\((.*)\))?", part.strip())
    if not match:
        raise SystemExit(f"cannot read strategy part {part!r} (expected NAME or NAME(key=value,...))")
    pairs = (item.partition("=") for item in (match[2] or "").split(",") if item.strip())
    return {"name": match[1], **{k.strip(): json.loads(v) for k, _, v in pairs}}


@dataclass
class Finished:
    """One finished trial, with the run's cumulative epochs and seconds when it ended."""

    number: int
    state: str  # complete | pruned | steered | fail
    value: float | None
    epochs: int
    seconds: float

    @property
    def accuracy(self) -> float:
        """The value to rank by: a trial without one (a failed trial) ranks below all."""
        return -math.inf if self.value is None else self.value


@dataclass
class Run:
    strategy: str
    trials: list[Finished] = field(default_factory=list)
    test_accuracy: float = -math.inf  # no completed trial within E


class BudgetSpent(Exception):
    """``run_worker`` stops only at a trial count or a timeout. Raised from its progress
    callback just after a trial was told, this ends a run at an epochs-and-seconds budget
    without restarting the worker in chunks (each restart would be time on no trial)."""


def run_strategy(label: str, seed: int, args: argparse.Namespace, work: Path,
                 done: Callable[[int, float], bool]) -> Run:
    """Run hpo's worker on a fresh study until ``done(epochs, seconds)``. The clock starts at
    the first trial, so the worker's one-off start (study load, warm-up) is left out."""
    from hpo.spec import load_spec
    from hpo.storage.urls import resolve_storage
    from hpo.study.studies import create_study
    from hpo.worker.loop import run_worker

    name = re.sub(r"[^A-Za-z0-9._-]", "_", f"{label}-seed{seed}")
    sampler, pruner = strategy_sections(label)
    sections = f"sampler: {json.dumps({**sampler, 'seed': seed})}"
    if pruner:
        sections += f"\npruner: {json.dumps(pruner)}"
    path = work / f"{name}.yaml"
    spec = SPACES[args.space].spec
    path.write_text(spec.format(name=name, strategy=sections, fraction=args.fraction, epochs=args.epochs))
    target = resolve_storage(str(work / f"{name}.journal"))
    create_study(load_spec(path), target, artifacts=str(work / f"{name}-artifacts"))
    run, first_start, epochs = Run(label), None, 0

    def progress(event: str, data: dict) -> None:
        nonlocal first_start, epochs
        now = time.perf_counter()
        if event == "trial_start" and first_start is None:
            first_start = now
        if event == "trial_end":
            assert first_start is not None  # a trial ends only after one started
            outcome = data["outcome"]
            epochs += outcome.epochs
            elapsed = now - first_start
            run.trials.append(Finished(outcome.number, outcome.state, outcome.value, epochs, elapsed))
            if done(epochs, elapsed):
                raise BudgetSpent

    try:
        report = run_worker(name, target, rank=0, progress=progress)
        raise SystemExit(f"{name}: the worker stopped before the budget: {report.stop_reason}")
    except BudgetSpent:
        pass
    best = best_trial(within(run.trials, "epochs", args.epochs * args.full_trials))
    if best is not None:
        run.test_accuracy = test_accuracy(target, name, best.number, work)
    return run


def test_accuracy(target, name: str, number: int, work: Path) -> float:
    """Accuracy on the held-out test split of trial ``number``'s final weights (hpo keeps the
    weights of the best trials: $HPO_KEEP_WEIGHTS, best:3 by default)."""
    import optuna
    import torch
    from optuna.artifacts import download_artifact

    from hpo.artifacts.store import study_store
    from hpo.artifacts.trial_files import WEIGHTS_FILE
    from hpo.models.registry import create_model, parse_model_config
    from hpo.storage.urls import open_storage
    from hpo.study.attrs import ARTIFACTS as ARTIFACTS_ATTR
    from hpo.training import DataConfig
    from hpo.training.data import load_test_split
    from hpo.training.loop import evaluate_model

    study = optuna.load_study(study_name=name, storage=open_storage(target))
    (trial,) = [t for t in study.get_trials(deepcopy=False) if t.number == number]
    weights, store = work / f"{name}-trial{number}.pt", study_store(study)
    if store is None:
        raise SystemExit(f"{name}: the study has no artifact store to keep weights in")
    download_artifact(artifact_store=store, file_path=str(weights),
                      artifact_id=trial.user_attrs[ARTIFACTS_ATTR][WEIGHTS_FILE])
    config, io = trial.user_attrs["config"], trial.user_attrs["model_io"]
    net = create_model(parse_model_config(config["model"]), tuple(io["in_shape"]), io["num_classes"])
    net.load_state_dict(torch.load(weights, weights_only=True))
    return evaluate_model(net, load_test_split(DataConfig.model_validate(config["data"])).test)[1]


# -- analysis of the runs' prefixes -------------------------------------------------------


def within(trials: list[Finished], kind: str, limit: float) -> list[Finished]:
    """The trials that finished within ``limit`` cumulative epochs or seconds."""
    return [t for t in trials if getattr(t, kind) <= limit * (1 + 1e-9)]


def best_trial(trials: list[Finished]) -> Finished | None:
    """The best completed trial (what ``hpo study best`` reports): pruned ones never count."""
    complete = [t for t in trials if t.state == "complete"]
    return max(complete, key=lambda t: t.accuracy) if complete else None


def best(trials: list[Finished]) -> float:
    found = best_trial(trials)
    return found.accuracy if found else -math.inf  # no completed trial yet


def first_reaching(trials: list[Finished], target: float) -> Finished | None:
    return next((t for t in trials if t.state == "complete" and t.accuracy >= target - 1e-9), None)


def spread(values: list[float], digits: int = 3, missing: str = "none") -> str:
    """Median (min–max) over seeds; ``missing`` stands for a seed with nothing (no completed
    trial, target not reached) and is what the median shows when most seeds had nothing."""
    def show(v: float) -> str:
        return f"{v:.{digits}f}" if math.isfinite(v) else missing

    low, high = min(values), max(values)
    median = show(statistics.median(values))
    return median if low == high else f"{median} ({show(low)}–{show(high)})"


def trial_counts(seeds: list[Run], kind: str, limits: list[float]) -> tuple[str, str]:
    """Median over seeds of the trials finished within each seed's budget, and of those pruned."""
    prefixes = [within(r.trials, kind, limit) for r, limit in zip(seeds, limits)]
    run = statistics.median(len(p) for p in prefixes)
    pruned = statistics.median(sum(t.state in ("pruned", "steered") for t in p) for p in prefixes)
    return f"{run:g}", f"{pruned:g}"


def budget_table(runs: dict[str, list[Run]], kind: str, budgets: list[float], unit: str) -> list[str]:
    """Trials run and pruned within the budget, and the best at each share of it."""
    shares = " | ".join(f"best val acc at {name} {unit}" for name, _ in FRACTIONS)
    lines = [f"| strategy | trials run | trials pruned | {shares} |", "|---|---:|---:|" + "---:|" * len(FRACTIONS)]
    for label, seeds in runs.items():
        cells = [spread([best(within(r.trials, kind, share * b)) for r, b in zip(seeds, budgets)])
                 for _, share in FRACTIONS]
        lines.append(f"| {label} | {' | '.join(trial_counts(seeds, kind, budgets))} | {' | '.join(cells)} |")
    return lines


def reach_table(runs: dict[str, list[Run]], targets: dict[str, list[float]]) -> list[str]:
    """Epochs and seconds to the first completed trial at or above each seed's target."""
    lines = ["| strategy | target | seeds reaching | epochs | seconds |", "|---|---|---:|---:|---:|"]
    for label, seeds in runs.items():
        for name, per_seed in targets.items():
            reached = [first_reaching(r.trials, target) for r, target in zip(seeds, per_seed)]
            epochs = spread([t.epochs if t else math.inf for t in reached], 0, "∞")
            seconds = spread([t.seconds if t else math.inf for t in reached], 1, "∞")
            lines.append(f"| {label} | {name} | {sum(map(bool, reached))}/{len(seeds)} | {epochs} | {seconds} |")
    return lines


def test_table(runs: dict[str, list[Run]], budget: int) -> list[str]:
    lines = ["| strategy | best val acc | test acc |", "|---|---:|---:|"]
    for label, seeds in runs.items():
        val = spread([best(within(r.trials, "epochs", budget)) for r in seeds])
        lines.append(f"| {label} | {val} | {spread([r.test_accuracy for r in seeds])} |")
    return lines


def goal_table(runs: dict[str, list[Run]], finals: list[float], budget: int) -> list[str]:
    """Epochs to reach random search's final best (of the same seed) as a share of E."""
    lines = ["| strategy | per seed | median | goal met |", "|---|---|---:|---|"]
    for label, seeds in list(runs.items())[1:]:
        shares = [t.epochs / budget if t else math.inf for t in map(first_reaching, (r.trials for r in seeds), finals)]
        per_seed = ", ".join(f"{s:.2f}" if math.isfinite(s) else f"> {r.trials[-1].epochs / budget:.2f}"
                             for s, r in zip(shares, seeds))
        median = statistics.median(shares)
        shown = f"{median:.2f}" if math.isfinite(median) else "∞"
        lines.append(f"| {label} | {per_seed} | {shown} | {'met' if median <= GOAL else 'not met'} |")
    return lines


def tables(runs: dict[str, list[Run]], args: argparse.Namespace, n_train: int, loads: list[float]) -> str:
    from benchmarks.common import machine

    budget = args.epochs * args.full_trials
    times = [r.trials[-1].seconds for r in runs["random"]]
    finals = [best(r.trials) for r in runs["random"]]
    return "\n".join([
        f"Search efficiency at equal compute: {SPACES[args.space].title}, data.train_fraction "
        f"{args.fraction} ({n_train} training images; validation and test whole), {args.epochs} epochs per full trial, "
        f"E = {args.full_trials} full trials = {budget} epochs, T = random search's wall time for E "
        f"(median {statistics.median(times):.1f} s); {args.seeds} seeds (sampler.seed s, random search "
        f"{REFERENCE_SEED} + s), median (min–max) over seeds. "
        f"Machine: {machine()}.", "",
        "Equal epochs (pruned trials' epochs count; best = best completed trial):", "",
        *budget_table(runs, "epochs", [budget] * args.seeds, "E"), "",
        "Equal wall-clock (T per seed, sampling and bookkeeping included):", "",
        *budget_table(runs, "seconds", times, "T"), "",
        "To reach a target (within the run, at least E epochs and T seconds; ∞: not reached):", "",
        *reach_table(runs, {"random's final best": finals, f"val acc {args.target}": [args.target] * args.seeds}), "",
        "Test accuracy of each strategy's best trial within E (its final weights, held-out test split):", "",
        *test_table(runs, budget), "",
        f"Epochs to reach random search's final best, as a share of E (goal for default: ≤ {GOAL:g}):", "",
        *goal_table(runs, finals, budget), "",
        # Other processes on the machine stretch the seconds (T and every run), never the epochs.
        f"Load average (1 min) at the start and the end: {loads[0]:.2f}, {loads[1]:.2f}.",
    ])


def say(run: Run, seed: int, started: float) -> None:
    last = run.trials[-1]
    print(f"seed {seed} {run.strategy}: {len(run.trials)} trials, {last.epochs} epochs, {last.seconds:.1f} s, "
          f"best {best(run.trials):.3f}, test {run.test_accuracy:.3f} ({time.perf_counter() - started:.0f} s so far)",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", default="default,random,tpe", help="comma-separated, see the module docstring")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--full-trials", type=int, default=24, help="E = this many full trials' epochs")
    parser.add_argument("--epochs", type=int, default=12, help="train.epochs of a full trial")
    parser.add_argument("--space", choices=sorted(SPACES), default="cnn", help="the search space (SPACES)")
    parser.add_argument("--fraction", type=float, default=0.1, help="data.train_fraction")
    parser.add_argument("--target", type=float, default=0.9, help="a fixed validation accuracy to reach")
    parser.add_argument("--tiny", action="store_true", help="2 seeds, 2 full trials of 3 epochs")
    parser.add_argument("--output", type=Path, help="also write the tables to this file")
    args = parser.parse_args()
    if args.tiny:
        args.seeds, args.full_trials, args.epochs = 2, 2, 3
    from benchmarks.common import write_table
    from hpo.artifacts.trial_files import DEFAULT_KEEP, KEEP_ENV
    from hpo.study.studies import quiet_optuna
    from hpo.worker.threads import ENV_VAR as THREADS_ENV

    quiet_optuna()
    os.environ[KEEP_ENV] = DEFAULT_KEEP  # the best trial's weights must be kept, as by default
    # All cores, as for a worker alone on the machine, even while others' workers register.
    os.environ.setdefault(THREADS_ENV, str(os.cpu_count()))
    labels = ["random"] + [s for s in re.split(r",(?![^()]*\))", args.strategies) if s and s != "random"]
    budget = args.epochs * args.full_trials
    runs: dict[str, list[Run]] = {label: [] for label in labels}
    started, load = time.perf_counter(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            reference = run_strategy("random", REFERENCE_SEED + seed, args, Path(tmp), spent(budget))
            equal = spent(budget, reference.trials[-1].seconds)  # E epochs and T (of this seed) seconds
            for label in labels:
                run = reference if label == "random" else run_strategy(label, seed, args, Path(tmp), equal)
                runs[label].append(run)
                say(run, seed, started)
    write_table(tables(runs, args, train_images(args), [load, os.getloadavg()[0]]), args.output)


def spent(epochs: int, seconds: float = 0.0) -> Callable[[int, float], bool]:
    """A run's end: at least ``epochs`` trained and ``seconds`` used."""
    return lambda trained, used: trained >= epochs and used >= seconds


def train_images(args: argparse.Namespace) -> int:
    from hpo.training import DataConfig
    from hpo.training.data import load_splits

    data = DataConfig(name="digits", val_fraction=0.2, test_fraction=0.2, split_seed=0, train_fraction=args.fraction)
    return len(load_splits(data).train)


if __name__ == "__main__":
    main()
