"""What the recorded curves table offers a benchmark, as Markdown: how far its final
accuracies spread, how well early epochs rank configurations like the last one does, how
noisy the seeds are against the gaps between the best configurations, and what the
recording cost in seconds.

    uv run python -m benchmarks.curves.properties                     # the shipped table
    uv run python -m benchmarks.curves.properties --table /tmp/synthetic.npz --output props.md

A failed run (a non-finite loss) has NaN after its failure: in every mean, spread and rank
here its accuracy counts as chance (table.CHANCE, 0.1), as the table's ``mean_final`` does.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from benchmarks.common import write_table
from benchmarks.curves.table import CHANCE, TABLE, CurveTable

PERCENTILES = (10, 25, 50, 75, 90)
NEAR_BEST = (0.01, 0.02, 0.05)
EARLY_EPOCHS = (1, 2, 3, 5, 7, 10, 15, 20)
TOP_SHARE = 0.1  # the configurations a tuner must find: the top 10 % by final mean
REDUCTION_FACTOR = 3  # Hyperband's default: each rung keeps the top third
BEST_SHOWN = 5
NTH_BEST = 10  # the gap from the best to this one is what seed noise is compared with
# Accuracies are float32: a gap of exactly 0.02 may read 0.02000001 (real gaps differ by
# multiples of 1 / (3 seeds x ~360 validation images), far above this).
ROUNDING = 1e-6


def accuracy(table: CurveTable) -> np.ndarray:
    """Validation accuracy [c, s, e] with a failed run's missing epochs at chance."""
    return np.nan_to_num(table.val_accuracy, nan=CHANCE)


def mean_curves(table: CurveTable) -> np.ndarray:
    """Each configuration's accuracy per epoch, mean over seeds [c, e]."""
    return accuracy(table).mean(axis=1)


def top_rows(table: CurveTable, share: float = TOP_SHARE) -> np.ndarray:
    """The best ``share`` of configurations by final mean (at least two, so that a rank
    correlation among them is defined), best first."""
    count = max(2, math.ceil(share * len(table.configs)))
    return np.argsort(-table.mean_final, kind="stable")[:count]


@dataclass(frozen=True)
class Spread:
    percentiles: dict[int, float]  # 0 and 100: min and max
    near_best: dict[float, float]  # gap to the best mean -> share of configurations within it
    failed_runs: int
    runs: int
    failed_configs: int
    best: list[tuple[int, float, int]]  # (row, mean final accuracy, parameters), best first


def spread(table: CurveTable) -> Spread:
    final = table.mean_final
    qs = (0, *PERCENTILES, 100)
    order = np.argsort(-final, kind="stable")[:BEST_SHOWN]
    return Spread(percentiles={q: float(v) for q, v in zip(qs, np.percentile(final, qs))},
                  near_best={gap: float(np.mean(table.best_mean - final <= gap + ROUNDING)) for gap in NEAR_BEST},
                  failed_runs=int(table.failed.sum()), runs=int(table.failed.size),
                  failed_configs=int(table.failed.any(axis=1).sum()),
                  best=[(int(i), float(final[i]), int(table.params[i])) for i in order])


@dataclass(frozen=True)
class EarlyRank:
    epoch: int
    spearman_all: float  # mean accuracy at this epoch against the final mean, every configuration
    spearman_top: float  # the same among the top 10 % by final mean
    top_kept: float  # share of the top 10 % that rank in the top third at this epoch


def kept_by_rung(at_epoch: np.ndarray, top: np.ndarray) -> float:
    """Share of ``top`` rows whose accuracy ``at_epoch`` ranks in the top 1/REDUCTION_FACTOR
    (a tie at the boundary keeps every tied row: a rung's tie-break is not the table's)."""
    keep = max(1, len(at_epoch) // REDUCTION_FACTOR)
    rank = stats.rankdata(-at_epoch, method="min")
    return float(np.mean(rank[top] <= keep))


def early_ranking(table: CurveTable) -> list[EarlyRank]:
    curves, final, top = mean_curves(table), table.mean_final, top_rows(table)
    ranks = []
    for epoch in (e for e in EARLY_EPOCHS if e <= table.epochs):
        at_epoch = curves[:, epoch - 1]
        ranks.append(EarlyRank(epoch=epoch, spearman_all=float(stats.spearmanr(at_epoch, final).statistic),
                               spearman_top=float(stats.spearmanr(at_epoch[top], final[top]).statistic),
                               top_kept=kept_by_rung(at_epoch, top)))
    return ranks


@dataclass(frozen=True)
class SeedNoise:
    std_median: float  # std over seeds (ddof 1) of final accuracy, over configurations
    std_p90: float
    std_median_best: float  # the same among the NTH_BEST best configurations
    seed_spearman: float  # seed 0's final accuracies against seed 1's
    gap_to_nth: float  # best mean minus the NTH_BEST-th best mean


def seed_noise(table: CurveTable) -> SeedNoise:
    final = accuracy(table)[:, :, -1]
    std = final.std(axis=1, ddof=1) if table.n_seeds > 1 else np.zeros(len(final))
    ordered = np.argsort(-table.mean_final, kind="stable")
    nth = ordered[min(NTH_BEST, len(ordered)) - 1]
    seeds = stats.spearmanr(final[:, 0], final[:, 1]).statistic if table.n_seeds > 1 else math.nan
    return SeedNoise(std_median=float(np.median(std)), std_p90=float(np.percentile(std, 90)),
                     std_median_best=float(np.median(std[ordered[:NTH_BEST]])), seed_spearman=float(seeds),
                     gap_to_nth=float(table.mean_final[ordered[0]] - table.mean_final[nth]))


@dataclass(frozen=True)
class Seconds:
    cpu_total: float
    wall_total: float
    full_trial_median: float  # CPU seconds of a run trained to the last epoch
    full_trial_min: float
    full_trial_max: float

    @property
    def wall_per_cpu(self) -> float:
        return self.wall_total / self.cpu_total


def recorded_seconds(table: CurveTable) -> Seconds:
    full = table.cpu_seconds[~table.failed].sum(axis=1)  # a failed run is not a full trial
    return Seconds(cpu_total=float(np.nansum(table.cpu_seconds)), wall_total=float(np.nansum(table.wall_seconds)),
                   full_trial_median=float(np.median(full)), full_trial_min=float(full.min()),
                   full_trial_max=float(full.max()))


def describe_config(config: dict) -> str:
    return ", ".join(f"{name.partition('.')[2]}={value}" for name, value in config.items())


def spread_markdown(table: CurveTable, s: Spread) -> str:
    names = ["min", *(f"p{q}" for q in PERCENTILES), "max"]
    lines = ["### Spread of final accuracies", "",
             "Mean over seeds of the final validation accuracy, per configuration:", "",
             "| " + " | ".join(names) + " |", "|" + "---:|" * len(names),
             "| " + " | ".join(f"{v:.3f}" for v in s.percentiles.values()) + " |", "",
             "| within this of the best mean | " + " | ".join(f"{gap}" for gap in s.near_best) + " |",
             "|---|" + "---:|" * len(s.near_best),
             "| share of configurations | " + " | ".join(f"{v:.1%}" for v in s.near_best.values()) + " |", "",
             f"Failed runs (non-finite loss): {s.failed_runs} of {s.runs}, in {s.failed_configs} configurations.", "",
             "| rank | mean final accuracy | parameters | configuration |", "|---:|---:|---:|---|"]
    lines += [f"| {rank} | {mean:.3f} | {params} | {describe_config(table.configs[row])} |"
              for rank, (row, mean, params) in enumerate(s.best, 1)]
    return "\n".join(lines)


def early_markdown(ranks: list[EarlyRank], top: int) -> str:
    lines = ["### Early epochs against the last", "",
             f"Spearman correlation of the mean-over-seeds accuracy at epoch e with the final mean, over "
             f"every configuration and over the top 10 % ({top}) by final mean; and the share of that top "
             f"10 % ranked in the top third at epoch e (what a Hyperband rung with reduction factor "
             f"{REDUCTION_FACTOR} keeps):", "",
             "| epoch | ρ all | ρ top 10 % | top 10 % kept by a rung |", "|---:|---:|---:|---:|"]
    lines += [f"| {r.epoch} | {r.spearman_all:.3f} | {r.spearman_top:.3f} | {r.top_kept:.0%} |" for r in ranks]
    return "\n".join(lines)


def noise_markdown(n: SeedNoise) -> str:
    ratio = n.gap_to_nth / n.std_median_best if n.std_median_best else math.inf
    return "\n".join([
        "### Noise between seeds", "",
        "| std of final accuracy over seeds: median | p90 | median, 10 best | ρ seed 0 vs seed 1 "
        f"| best − {NTH_BEST}th best mean | gap / median std of the 10 best |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {n.std_median:.4f} | {n.std_p90:.4f} | {n.std_median_best:.4f} | {n.seed_spearman:.3f} "
        f"| {n.gap_to_nth:.4f} | {ratio:.2f} |",
    ])


def seconds_markdown(s: Seconds) -> str:
    return "\n".join([
        "### Recorded seconds", "",
        "| CPU seconds, total | CPU hours | s per full trial: median | min | max | wall / CPU |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {s.cpu_total:.0f} | {s.cpu_total / 3600:.2f} | {s.full_trial_median:.2f} | {s.full_trial_min:.2f} "
        f"| {s.full_trial_max:.2f} | {s.wall_per_cpu:.2f} |",
    ])


def properties_markdown(table: CurveTable, source: Path) -> str:
    header = (f"Curves table {source.name}: {len(table.configs)} configurations × {table.n_seeds} seeds × "
              f"{table.epochs} epochs. A failed run's accuracy after its failure counts as chance ({CHANCE}).")
    return "\n\n".join([header, spread_markdown(table, spread(table)),
                        early_markdown(early_ranking(table), len(top_rows(table))),
                        noise_markdown(seed_noise(table)), seconds_markdown(recorded_seconds(table))])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", type=Path, default=TABLE, help="a table of table.py's schema")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    if not args.table.exists():
        parser.error(f"{args.table} does not exist (record it: uv run python -m benchmarks.curves.record)")
    write_table(properties_markdown(CurveTable.load(args.table), args.table), args.output)


if __name__ == "__main__":
    main()
