"""Search strategies replayed on recorded learning curves: hpo's default against random
search, TPE without pruning, Optuna variants, Ray Tune (ASHA with random, TPE and BOHB
searchers), SMAC3's Hyperband facade and DEHB, every one on the same table
(benchmarks/curves/: the digits CNN space, every configuration trained to 20 epochs with 3
seeds through hpo's own training loop).

A strategy proposes configurations and epochs; the table answers (a seed drawn per trial)
and the run is charged the recorded CPU seconds of every epoch trained. Budgets per seed s:
random search with every trial trained to the end runs E = --full-trials x 20 epochs, its
recorded seconds become T; every other strategy runs until it has used both E epochs and T
seconds. Judged, with the table's best mean configuration as the optimum:

- regret: that best mean final accuracy minus the true (mean over seeds) final accuracy of
  the search's pick, the best observed full trial, at shares of E and of T;
- epochs to reach random search's final best (of the same seed s) as a share of E: median
  and worst decile (90th percentile) over seeds;
- the final pick's true mean accuracy (no test split involved: the table's seeds say how
  good a configuration is).

    uv run python -m benchmarks.search_replay            # every strategy, 50 seeds
    uv run python -m benchmarks.search_replay --strategies "default,dehb" --seeds 100
    uv run python -m benchmarks.search_replay --tiny     # seconds (the test suite's)

Strategy labels: benchmarks/replay/strategies.py (LABELS), or any hpo SAMPLER+PRUNER variant
as benchmarks/search_efficiency.py reads them ("tpe(n_startup_trials=5)+hyperband").
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.curves.table import TABLE, CurveTable
from benchmarks.replay import analysis
from benchmarks.replay.env import Finished, Replay

# The random reference draws from seeds of its own, as in the live benchmark (see there).
from benchmarks.search_efficiency import REFERENCE_SEED

REFERENCE = "random-full"
DEFAULT = "default"

FRACTIONS = (("1/16", 1 / 16), ("1/8", 1 / 8), ("1/4", 1 / 4), ("1/2", 1 / 2), ("all", 1.0))
GOAL = {"median": 1 / 8, "worst decile": 1 / 4}  # shares of E to reach random search's final best


@dataclass(frozen=True)
class Job:
    label: str
    seed: int
    table: Path
    epoch_budget: int
    second_budget: float


@dataclass(frozen=True)
class Run:
    label: str
    seed: int
    finished: tuple[Finished, ...]
    wall_seconds: float  # the strategy's own computing (sampling, modelling), the replay's


@functools.lru_cache(maxsize=2)
def load_table(path: Path) -> CurveTable:
    return CurveTable.load(path)


def replay(job: Job) -> Run:
    from benchmarks.replay.strategies import strategy

    table = load_table(job.table)
    run = strategy(job.label)
    started = time.perf_counter()
    env = Replay(table, job.seed, job.epoch_budget, job.second_budget)
    run(env, REFERENCE_SEED + job.seed if job.label == REFERENCE else job.seed)
    return Run(job.label, job.seed, tuple(env.finished), time.perf_counter() - started)


def run_all(jobs: list[Job], workers: int) -> list[Run]:
    if workers <= 1:
        return [replay(job) for job in jobs]
    # A fixed hash seed in the replaying processes: SMAC orders candidates through a set of
    # strings (smac_dehb.py), so smac-bohb repeats its runs only under one.
    os.environ.setdefault("PYTHONHASHSEED", "0")
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        return list(pool.imap(replay, jobs, chunksize=1))


# -- tables ---------------------------------------------------------------------------------


def cell(values: list[float], digits: int = 3, higher_is_worse: bool = True) -> str:
    """Median (worst decile) over seeds."""
    def show(v: float) -> str:
        return f"{v:.{digits}f}" if v != float("inf") else "∞"

    return f"{show(analysis.median(values))} ({show(analysis.worst(values, higher_is_worse))})"


def regret_table(table: CurveTable, runs: dict[str, list[Run]], kind: str, budgets: list[float]) -> list[str]:
    unit = "E" if kind == "epochs" else "T"
    lines = ["| strategy | " + " | ".join(f"regret at {name} {unit}" for name, _ in FRACTIONS) + " |",
             "|---|" + "---:|" * len(FRACTIONS)]
    for label, seeds in runs.items():
        cells = [cell([analysis.regret(table, analysis.within(r.finished, kind, share * b))
                       for r, b in zip(seeds, budgets)]) for _, share in FRACTIONS]
        lines.append(f"| {label} | {' | '.join(cells)} |")
    return lines


def reach_shares(runs: list[Run], targets: list[float], budget: int) -> list[float]:
    return [analysis.epochs_to_reach(r.finished, t) / budget for r, t in zip(runs, targets)]


def match_shares(table: CurveTable, runs: list[Run], references: list[Run], budget: int) -> list[float]:
    """Epochs, as a share of E, until the pick is as good (true mean) as random search's final pick."""
    goals = [analysis.true_accuracy(table, analysis.pick(analysis.within(r.finished, "epochs", budget)))
             for r in references]
    return [analysis.epochs_to_match(table, r.finished, g) / budget for r, g in zip(runs, goals)]


def summary_table(table: CurveTable, runs: dict[str, list[Run]], budget: int) -> list[str]:
    """Per strategy: trials, reach share of E, the pick's true accuracy, the strategy's own seconds."""
    targets = [analysis.best_observed(analysis.within(r.finished, "epochs", budget)) for r in runs[REFERENCE]]
    lines = ["| strategy | trials in E (full) | epochs to random's final best, share of E | seeds reaching "
             "| epochs to as good a pick, share of E | seeds reaching "
             "| final pick's true mean accuracy | its regret | s per run (replay) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, seeds in runs.items():
        in_budget = [analysis.within(r.finished, "epochs", budget) for r in seeds]
        trials = analysis.median([len(f) for f in in_budget])
        full = analysis.median([sum(t.full for t in f) for f in in_budget])
        shares = reach_shares(seeds, targets, budget)
        reached = sum(s != float("inf") for s in shares)
        matched = match_shares(table, seeds, runs[REFERENCE], budget)
        final = [analysis.true_accuracy(table, analysis.pick(f)) for f in in_budget]
        lines.append(f"| {label} | {trials:g} ({full:g}) | {cell(shares, 2)} | {reached}/{len(seeds)} "
                     f"| {cell(matched, 2)} | {sum(s != float('inf') for s in matched)}/{len(seeds)} "
                     f"| {cell(final, 3, higher_is_worse=False)} | {cell([table.best_mean - a for a in final])} "
                     f"| {analysis.median([r.wall_seconds for r in seeds]):.2f} |")
    return lines


def verdict(table: CurveTable, runs: dict[str, list[Run]], budget: int, budgets_t: list[float]) -> list[str]:
    """Whether hpo's default met the goal, and where a peer's median regret was lower."""
    from benchmarks.replay.strategies import PEERS

    if DEFAULT not in runs:
        return []
    targets = [analysis.best_observed(analysis.within(r.finished, "epochs", budget)) for r in runs[REFERENCE]]
    lines = []
    for what, shares in (("observed", reach_shares(runs[DEFAULT], targets, budget)),
                         ("as good a pick", match_shares(table, runs[DEFAULT], runs[REFERENCE], budget))):
        met = [f"{name} {value:.2f} ≤ {goal:g}: {'met' if value <= goal else 'not met'}"
               for name, goal, value in (("median", GOAL["median"], analysis.median(shares)),
                                         ("worst decile", GOAL["worst decile"], analysis.worst(shares)))]
        lines.append(f"Default to random search's final best ({what}): {'; '.join(met)}.")
    epoch_budgets: list[float] = [float(budget)] * len(budgets_t)
    behind = []
    for kind, budgets in (("epochs", epoch_budgets), ("seconds", budgets_t)):
        for name, share in FRACTIONS:
            def regrets(label: str, kind: str = kind, budgets: list[float] = budgets, share: float = share) -> float:
                return analysis.median([analysis.regret(table, analysis.within(r.finished, kind, share * b))
                                        for r, b in zip(runs[label], budgets)])
            ours = regrets(DEFAULT)
            better = [f"{label} {regrets(label):.3f}" for label in runs
                      if label in PEERS and regrets(label) < ours - 1e-9]
            if better:
                behind.append(f"at {name} {'E' if kind == 'epochs' else 'T'} (default {ours:.3f}): {', '.join(better)}")
    lines.append("Peers with a lower median regret than the default: "
                 + ("; ".join(behind) or "none, at any share") + ".")
    return lines


def report(table: CurveTable, runs: dict[str, list[Run]], args: argparse.Namespace, wall: float) -> str:
    from benchmarks.common import machine

    budget = args.full_trials * table.epochs
    budgets_t = [r.finished[-1].run_seconds for r in runs[REFERENCE]]
    return "\n".join([
        f"Search replay on {args.table.name}: {len(table.configs)} configurations x {table.n_seeds} seeds x "
        f"{table.epochs} epochs, best mean final accuracy {table.best_mean:.4f}. E = {args.full_trials} full trials "
        f"= {budget} epochs; T = random search's recorded seconds for E (median {analysis.median(budgets_t):.1f} s). "
        f"{args.seeds} seeds, median (worst decile) over seeds. Replayed in {wall:.0f} s on {args.workers} "
        f"processes; machine: {machine()}.", "",
        "Regret at shares of the epoch budget E (best mean accuracy minus the pick's true mean; "
        "nothing picked yet counts as chance):", "",
        *regret_table(table, runs, "epochs", [budget] * args.seeds), "",
        "Regret at shares of the recorded seconds T:", "",
        *regret_table(table, runs, "seconds", budgets_t), "",
        "Per strategy (within E):", "",
        *summary_table(table, runs, budget), "",
        *verdict(table, runs, budget, budgets_t),
    ])


def main() -> None:
    from benchmarks.replay.strategies import LABELS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", default=",".join(LABELS), help="comma-separated labels")
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--full-trials", type=int, default=24, help="E = this many full trials' epochs")
    parser.add_argument("--table", type=Path, default=TABLE)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes replaying")
    parser.add_argument("--tiny", action="store_true", help="2 seeds, E = 3 full trials")
    parser.add_argument("--output", type=Path, help="also write the tables to this file")
    args = parser.parse_args()
    if args.tiny:
        args.seeds, args.full_trials = 2, 3
    from benchmarks.common import write_table

    labels = [REFERENCE] + [s for s in re.split(r",(?![^()]*\))", args.strategies) if s and s != REFERENCE]
    table = load_table(args.table)
    budget = args.full_trials * table.epochs
    started = time.perf_counter()
    references = run_all([Job(REFERENCE, s, args.table, budget, 0.0) for s in range(args.seeds)], args.workers)
    jobs = [Job(label, r.seed, args.table, budget, r.finished[-1].run_seconds)
            for label in labels[1:] for r in references]
    runs: dict[str, list[Run]] = {REFERENCE: references}
    for run in run_all(jobs, args.workers):
        runs.setdefault(run.label, []).append(run)
    write_table(report(table, runs, args, time.perf_counter() - started), args.output)


if __name__ == "__main__":
    main()
