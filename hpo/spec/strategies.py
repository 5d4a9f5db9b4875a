"""Sampler and pruner registries: the spec names one, each worker rebuilds it.

Optuna does not persist samplers or pruners, so every worker builds its own from the
stored spec. Option models live here (torch- and optuna-free) so that validating a spec
and ``hpo --help`` stay fast; the builders import optuna only when called.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field

from hpo.registry import Registry
from hpo.training.config import FINITE, MAX_EPOCHS, Seed

# numpy's generators (and so Optuna's samplers) take seeds below 2**32. Seeds are below 2**31
# (hpo.training.config.MAX_SEED), so seed + rank fits for every rank below 2**31; a larger
# --rank wraps round instead of killing the worker.
SEED_MODULUS = 2**32


class StrategyOptions(BaseModel):
    model_config = FINITE


# ---------------------------------------------------------------- samplers


class TPEOptions(StrategyOptions):
    """Optuna's TPE; multivariate + group handle conditional (``when``) spaces, and the
    constant liar keeps parallel workers from proposing the same point twice."""

    name: Literal["tpe"] = "tpe"
    seed: Seed | None = None
    n_startup_trials: int = Field(10, ge=0)
    multivariate: bool = True
    # Groups only differ from one joint model when trials sample different parameters, and
    # Optuna recomputes them from every finished trial on each ask (a cost that grows with the
    # study; BENCHMARKS.md has the numbers).
    group: bool | None = Field(
        None, description="model conditional parameters in groups; default: exactly when the space "
        "has `when` or `repeat` parameters"
    )
    constant_liar: bool = True


class RandomOptions(StrategyOptions):
    name: Literal["random"] = "random"
    seed: Seed | None = None
    unique: bool = Field(
        False, description="no configuration twice, across every worker, while the finite space has "
        "unused ones (needs choices, int ranges or stepped float ranges)"
    )


class GPOptions(StrategyOptions):
    """Gaussian-process sampler: strong for few, expensive trials; ignores pruned trials."""

    name: Literal["gp"] = "gp"
    seed: Seed | None = None
    n_startup_trials: int = Field(10, ge=0)


class GridOptions(StrategyOptions):
    """Every combination of the searched choices (Optuna's GridSampler; workers share the
    grid, in the order ``seed`` shuffles it). Needs every searched key to give `choices`, without `when` or `repeat`."""

    name: Literal["grid"] = "grid"
    seed: Seed | None = None


@dataclass(frozen=True)
class Strategy:
    options: type[StrategyOptions]
    build: Callable[..., Any]


SAMPLERS: Registry[Strategy] = Registry("sampler")
PRUNERS: Registry[Strategy] = Registry("pruner")


def _worker_seed(seed: int | None, rank: int) -> int | None:
    # Identical seeds in every worker make duplicate trials: offset by the worker's rank.
    return None if seed is None else (seed + rank) % SEED_MODULUS


def _build_tpe(o: TPEOptions, rank: int, space: SpaceFacts) -> Any:
    import optuna

    group = space.conditional if o.group is None else o.group
    return optuna.samplers.TPESampler(
        seed=_worker_seed(o.seed, rank),
        n_startup_trials=o.n_startup_trials,
        multivariate=o.multivariate,
        group=group and o.multivariate,
        constant_liar=o.constant_liar,
    )


def _build_random(o: RandomOptions, rank: int, space: SpaceFacts) -> Any:
    import optuna

    if o.unique:
        from hpo.spec.unique_random import UniqueRandomSampler

        return UniqueRandomSampler(space.configurations, seed=_worker_seed(o.seed, rank), order_seed=o.seed,
                                   all_trials=space.all_trials)
    return optuna.samplers.RandomSampler(seed=_worker_seed(o.seed, rank))


def _build_gp(o: GPOptions, rank: int, space: SpaceFacts) -> Any:
    import optuna

    return optuna.samplers.GPSampler(
        seed=_worker_seed(o.seed, rank), n_startup_trials=o.n_startup_trials
    )


def _build_grid(o: GridOptions, rank: int, space: SpaceFacts) -> Any:
    import optuna

    from hpo.storage.optuna_internals import seed_sampler_rng

    class SharedGridSampler(optuna.samplers.GridSampler):
        """Optuna's grid, in one order for every worker, minus its ``study.stop()``.

        Optuna shuffles the grid with the seed and records in each trial only a grid id, an
        index into that order, which every worker reads to tell visited points from the rest:
        seeded ``seed + rank`` like the other samplers, each worker had its own order, so
        workers (and a retry after a hand-back) ran one point twice and skipped another. The
        order is shuffled with the spec's seed; only the pick among the unvisited points is
        seeded per worker, so that two workers asking at once rarely pick the same one.

        ``study.stop()`` once the grid is used up only works inside ``study.optimize``; here
        the study's budget (at most the grid size, checked with the spec) stops the workers.
        """

        def __init__(self, grid: dict[str, list[Any]], *, seed: int | None, worker_seed: int | None):
            import math

            super().__init__(grid, seed=seed)
            # The grid as Optuna stores it in each trial (keys sorted), and its size: what
            # _get_unvisited_grid_ids compares with, without the base class's private copies.
            self.stored_space = {key: list(values) for key, values in sorted(grid.items())}
            self.n_points = math.prod(len(values) for values in grid.values())
            seed_sampler_rng(self, worker_seed)

        def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                        state: optuna.trial.TrialState, values: Sequence[float] | None) -> None:
            return None

        def _get_unvisited_grid_ids(self, study: optuna.Study) -> list[int]:
            """Optuna 5.0.0's (samplers/_grid.py), which ``before_trial`` asks for the points
            left, with one change: a failed trial without parameters never ran its point (a
            worker killed between its ask and the parameters' write, which the sweep fails
            without a retry: hpo.worker.recovery), so its point is not visited. Optuna counts
            every finished trial, so that point was never run and a random one ran twice.
            (An override of Optuna's private hook: tests/worker/test_recovery.py fails if
            an upgrade stops calling it.)"""
            from optuna.trial import TrialState

            from hpo.storage.optuna_internals import storage_of, study_id_of

            visited: set[int] = set()
            running: set[int] = set()
            for t in storage_of(study).get_all_trials(study_id_of(study), deepcopy=False):
                attrs = t.system_attrs
                if "grid_id" not in attrs or attrs.get("search_space") != self.stored_space:
                    continue
                if t.state == TrialState.FAIL and not t.params:
                    continue
                if t.state.is_finished():
                    visited.add(attrs["grid_id"])
                elif t.state == TrialState.RUNNING:
                    running.add(attrs["grid_id"])
            every = set(range(self.n_points))
            # All started: the ones not finished yet, as Optuna does.
            return list(every - visited - running or every - visited)

    return SharedGridSampler(space.grid, seed=o.seed, worker_seed=_worker_seed(o.seed, rank))


SAMPLERS.add("tpe", Strategy(TPEOptions, _build_tpe))
SAMPLERS.add("grid", Strategy(GridOptions, _build_grid))
SAMPLERS.add("random", Strategy(RandomOptions, _build_random))
SAMPLERS.add("gp", Strategy(GPOptions, _build_gp))


# ---------------------------------------------------------------- pruners


class HyperbandOptions(StrategyOptions):
    """Hyperband over epochs. Resources are explicit: Optuna's "auto" is computed per
    process, so workers could disagree about brackets."""

    name: Literal["hyperband"] = "hyperband"
    min_resource: int = Field(1, ge=1, le=MAX_EPOCHS, description="fewest epochs before a trial can be pruned")
    max_resource: int | None = Field(
        None, ge=1, le=MAX_EPOCHS,
        description="epochs of a full trial; defaults to train.epochs (its largest searched value)"
    )
    reduction_factor: int = Field(3, ge=2)


class MedianOptions(StrategyOptions):
    name: Literal["median"] = "median"
    n_startup_trials: int = Field(5, ge=0)
    n_warmup_steps: int = Field(0, ge=0, le=MAX_EPOCHS, description="epochs before pruning is considered")


class SuccessiveHalvingOptions(StrategyOptions):
    """Successive halving over epochs: hpo's default pruner (a spec naming none gets these
    options). Rungs at min_resource x reduction_factor**k epochs, 2, 4, 8, 16 by default,
    each keeping the better 1/reduction_factor of the trials that reached it; it beat the
    former default, Hyperband (min_resource 1, reduction_factor 3), at every share of the
    budget from 1/8 on in BENCHMARKS.md "Search replay". A trial of fewer epochs than
    min_resource is never pruned, and none is judged after its last epoch (TrialReporter)."""

    name: Literal["successive_halving"] = "successive_halving"
    min_resource: int = Field(2, ge=1, le=MAX_EPOCHS, description="fewest epochs before a trial can be pruned")
    reduction_factor: int = Field(2, ge=2, description="keep about 1/factor of the trials at each rung")


class NoPrunerOptions(StrategyOptions):
    name: Literal["none"] = "none"


def _build_hyperband(o: HyperbandOptions, max_epochs: int) -> Any:
    import optuna

    return optuna.pruners.HyperbandPruner(
        min_resource=o.min_resource,
        max_resource=o.max_resource or max_epochs,
        reduction_factor=o.reduction_factor,
    )


def _build_median(o: MedianOptions, max_epochs: int) -> Any:
    import optuna

    return optuna.pruners.MedianPruner(
        n_startup_trials=o.n_startup_trials, n_warmup_steps=o.n_warmup_steps
    )


def _build_successive_halving(o: SuccessiveHalvingOptions, max_epochs: int) -> Any:
    import optuna

    # The first rung at min_resource itself (stated, not left to Optuna's default): the
    # rungs the docs and the replay benchmark describe.
    return optuna.pruners.SuccessiveHalvingPruner(
        min_resource=o.min_resource, reduction_factor=o.reduction_factor, min_early_stopping_rate=0
    )


def _build_no_pruner(o: NoPrunerOptions, max_epochs: int) -> Any:
    import optuna

    return optuna.pruners.NopPruner()


PRUNERS.add("hyperband", Strategy(HyperbandOptions, _build_hyperband))
PRUNERS.add("median", Strategy(MedianOptions, _build_median))
PRUNERS.add("successive_halving", Strategy(SuccessiveHalvingOptions, _build_successive_halving))
PRUNERS.add("none", Strategy(NoPrunerOptions, _build_no_pruner))


@dataclass(frozen=True)
class SpaceFacts:
    """What samplers need to know of the search space (``hpo.spec.space.space_facts``)."""

    grid: dict[str, list[Any]] = field(default_factory=dict)  # the searched choices by name (grid)
    conditional: bool = False  # some parameters are sampled only in some trials (when, repeat)
    # Every configuration of a finite space, as trial params (unique random sampling only).
    configurations: tuple[dict[str, Any], ...] = ()
    # Every trial of a study, read past the Hyperband pruner's per-bracket view of it (the
    # worker passes hpo.storage's reader); None: ``study.get_trials``.
    all_trials: Callable[[Any], Sequence[Any]] | None = None


def build_sampler(options: StrategyOptions, *, rank: int = 0, space: SpaceFacts | None = None) -> Any:
    return SAMPLERS.get(options.name).build(options, rank, space or SpaceFacts())  # type: ignore[attr-defined]


def build_pruner(options: StrategyOptions, *, max_epochs: int) -> Any:
    return PRUNERS.get(options.name).build(options, max_epochs)  # type: ignore[attr-defined]


SamplerOptions = TPEOptions | RandomOptions | GPOptions | GridOptions
PrunerOptions = HyperbandOptions | MedianOptions | SuccessiveHalvingOptions | NoPrunerOptions
