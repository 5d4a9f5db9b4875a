"""Ray Tune's strategies on the replay: Ray's own scheduler and search objects, set up as
``tune.run`` sets them up for a user with one GPU (``max_concurrent_trials=1``), and driven
by a stand-in for Ray's TuneController that runs one trial at a time on the replay.

Starting Ray (``ray.init``, a Tuner, one actor per trial) takes longer than a whole replay
may, and none of it takes a decision: the scheduler (continue, pause or stop a trial after
each result; which trial runs next) and the searcher (which configuration comes next) do,
and they see the controller only through ``get_trials``, ``stop_trial`` and ``search_alg``.
The stand-in (``Controller``) makes the calls TuneController makes, in its order
(tune_controller.py: ``_maybe_update_trial_queue``, ``choose_trial_to_run``,
``_process_trial_result``, ``_process_trial_failure``, ``stop_trial``). Trials are Ray's own
``ray.tune.experiment.Trial`` objects, made by the search algorithm from an ``Experiment``
as in a real run (no Ray needed; the experiment's storage is a temporary directory).

- ``ray-asha-random``: AsyncHyperBandScheduler (ASHA) with BasicVariantGenerator.
- ``ray-asha-tpe``: ASHA with OptunaSearch (Optuna's TPESampler; works with Optuna 5).
- ``ray-asha-bohb``: ASHA with TuneBOHB. TuneBOHB learns only from results that carry the
  ``hyperband_info`` budget HyperBandForBOHB adds; ASHA adds none, so with ASHA (as in Ray
  itself) BOHB never fits its model and samples at random from its ConfigSpace.
- ``ray-bohb``: HyperBandForBOHB with TuneBOHB, as Ray documents BOHB: trials are paused at
  each rung and resumed (from their checkpoint: the replayed trial continues) when the
  bracket promotes them. On one worker this degenerates after the first bracket, in Ray as
  here: a bracket counts as filled by its live trials, so once its last trials finish every
  new trial joins it at its last rung and trains to the end (ray-project/ray#12536), and
  TuneBOHB, which hears budgets only at rung ends, learns nothing more.

ASHA: ``max_t`` = the table's epochs, otherwise Ray's defaults (grace_period 1,
reduction_factor 4, one bracket). HyperBandForBOHB: ``max_t`` = the table's epochs,
reduction_factor 3 (its default) and ``stop_last_trials=False`` as in Ray's BOHB example
(with max_t 20 and eta 3 the rungs are 2, 6, 18: stopping the last rung would end every
trial of the largest bracket at 18 epochs, never a full trial).

The search space is space.ranges as tune.choice / loguniform / uniform / randint domains;
``train.momentum`` is sampled always and dropped unless the optimizer is sgd (Ray's domains
have no conditions). TuneBOHB gets it as a ConfigSpace with the condition. A run is
reproducible from its seed: the searchers are seeded, and numpy's global generator (which
ASHA's bracket draw and hpbandster's BOHB use) is seeded for the run and restored after.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import tempfile
import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from benchmarks.curves import space
from benchmarks.replay.env import BudgetSpent, Replay
from benchmarks.replay.env import Trial as ReplayedTrial
from benchmarks.replay.smac_dehb import configspace, table_config

if TYPE_CHECKING:
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import TrialScheduler
    from ray.tune.search import SearchAlgorithm

METRIC, MODE = "val_accuracy", "max"
TIME_ATTR = "training_iteration"
MANY_SAMPLES = 10**6  # num_samples: never the limit, the replay's budget is
ONE_WORKER = 1  # max_concurrent_trials: a single-GPU user


def param_space(values: dict[str, tuple[Any, ...]]) -> dict[str, Any]:
    """The replayed space (space.ranges) as Ray Tune's domains."""
    from ray import tune

    domains: dict[str, Any] = {}
    for name, described in space.ranges(values).items():
        if "choices" in described:
            domains[name] = tune.choice(described["choices"])
        elif described["integer"]:  # Ray's integer upper bounds are exclusive
            randint = tune.lograndint if described["log"] else tune.randint
            domains[name] = randint(described["low"], described["high"] + 1)
        else:
            uniform = tune.loguniform if described["log"] else tune.uniform
            domains[name] = uniform(float(described["low"]), float(described["high"]))
    return domains


def replayed_trainable(config: dict[str, Any]) -> None:
    """The experiment's trainable, never called: the replay trains its trials."""
    raise RuntimeError("a replayed trial is trained by the replay, not by Ray")


class Controller:
    """A stand-in for Ray Tune's TuneController with one worker: what schedulers and
    searchers call on it (``get_trials``, ``stop_trial``, ``search_alg``) and the calls it
    makes on them, each trial trained epoch by epoch on the replay."""

    def __init__(self, replay: Replay, search_alg: SearchAlgorithm, scheduler: TrialScheduler) -> None:
        self.replay = replay
        self.search_alg = search_alg
        self.scheduler = scheduler
        self.trials: list[Trial] = []
        self.replayed: dict[str, ReplayedTrial] = {}
        self.last_result: dict[str, dict[str, Any]] = {}
        # What the scheduler's hooks are handed: their annotations name TuneController,
        # of which they use only what this class has.
        self.as_tune_controller = cast("TuneController", self)

    def get_trials(self) -> list[Trial]:
        return self.trials

    def run(self) -> None:
        """Queue a trial, run the one the scheduler chooses, until the budget is spent or
        nothing is left to run."""
        while not self.replay.spent:
            self.queue_trial()
            trial = self.scheduler.choose_trial_to_run(self.as_tune_controller) or self.pending()
            if trial is None:
                return
            self.train(trial)

    def queue_trial(self) -> None:
        """As TuneController._maybe_update_trial_queue: a new trial from the search
        algorithm while none is pending (it declines while its one trial is live)."""
        if self.pending() is not None:
            return
        trial = self.search_alg.next_trial()
        if trial is not None:
            self.trials.append(trial)
            self.scheduler.on_trial_add(self.as_tune_controller, trial)

    def pending(self) -> Trial | None:
        from ray.tune.experiment import Trial

        return next((t for t in self.trials if t.status == Trial.PENDING), None)

    def train(self, trial: Trial) -> None:
        """Run ``trial`` (new, or resumed where it was paused) until the scheduler stops or
        pauses it, its run fails, or it has trained all of the table's epochs."""
        from ray.tune.experiment import Trial
        from ray.tune.schedulers import TrialScheduler

        trial.set_status(Trial.RUNNING)
        replayed = self.replayed.get(trial.trial_id)
        if replayed is None:  # else resumed: it continues from its checkpoint
            replayed = self.replayed[trial.trial_id] = self.replay.start(
                table_config(trial.config, self.replay.table.values)
            )
        while replayed.trained < self.replay.table.epochs:
            value = replayed.epoch()
            if value is None:
                self.fail(trial)
                return
            result = {METRIC: value, TIME_ATTR: replayed.trained, "trial_id": trial.trial_id}
            decision = self.scheduler.on_trial_result(self.as_tune_controller, trial, result)
            if decision != TrialScheduler.STOP:  # the searcher hears of a stopped trial's last result at its end
                self.search_alg.on_trial_result(trial.trial_id, result)
            self.last_result[trial.trial_id] = result
            if decision == TrialScheduler.STOP:
                break
            if decision == TrialScheduler.PAUSE:
                trial.set_status(Trial.PAUSED)
                return
        self.stop_trial(trial)  # stopped, or its trainable returned

    def fail(self, trial: Trial) -> None:
        """As TuneController._process_trial_failure (no retries: max_failures 0)."""
        from ray.tune.experiment import Trial

        self.scheduler.on_trial_error(self.as_tune_controller, trial)
        self.search_alg.on_trial_complete(trial.trial_id, error=True)
        trial.set_status(Trial.ERROR)
        self.replayed[trial.trial_id].finish("fail")

    def stop_trial(self, trial: Trial) -> None:
        """As TuneController.stop_trial: a running trial completes with its last result, a
        pending or paused one is removed (schedulers call this on paused trials)."""
        from ray.tune.experiment import Trial

        if trial.status in (Trial.ERROR, Trial.TERMINATED):
            return
        if trial.status in (Trial.PENDING, Trial.PAUSED):
            self.scheduler.on_trial_remove(self.as_tune_controller, trial)
            self.search_alg.on_trial_complete(trial.trial_id)
        else:
            result = self.last_result[trial.trial_id]
            self.scheduler.on_trial_complete(self.as_tune_controller, trial, result)
            self.search_alg.on_trial_complete(trial.trial_id, result=result)
        trial.set_status(Trial.TERMINATED)
        self.finish(trial)

    def finish(self, trial: Trial) -> None:
        replayed = self.replayed.get(trial.trial_id)
        if replayed is not None:  # a trial removed before it ever ran trained nothing
            replayed.finish("complete" if replayed.trained == self.replay.table.epochs else "pruned")

    def end(self) -> None:
        """The experiment's end stops the paused trials where they are (the trial that
        was running when the budget ran out never finished its epoch: left open)."""
        from ray.tune.experiment import Trial

        for trial in self.trials:
            if trial.status == Trial.PAUSED:
                trial.set_status(Trial.TERMINATED)
                self.finish(trial)


def random_search(values: dict[str, tuple[Any, ...]], seed: int) -> tuple[SearchAlgorithm, dict[str, Any]]:
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(max_concurrent=ONE_WORKER, random_state=seed), param_space(values)


def optuna_search(values: dict[str, tuple[Any, ...]], seed: int) -> tuple[SearchAlgorithm, dict[str, Any]]:
    from ray.tune.search import ConcurrencyLimiter, SearchGenerator
    from ray.tune.search.optuna import OptunaSearch

    from hpo.study.studies import quiet_optuna

    quiet_optuna()
    return SearchGenerator(ConcurrencyLimiter(OptunaSearch(seed=seed), ONE_WORKER)), param_space(values)


def bohb_search(values: dict[str, tuple[Any, ...]], seed: int) -> tuple[SearchAlgorithm, dict[str, Any]]:
    """TuneBOHB with its space given as a ConfigSpace (train.momentum conditional on sgd);
    the experiment's config is then empty, as tune.run requires."""
    from ray.tune.search import ConcurrencyLimiter, SearchGenerator
    from ray.tune.search.bohb import TuneBOHB

    searcher = TuneBOHB(configspace(values, seed), metric=METRIC, mode=MODE, seed=seed)
    return SearchGenerator(ConcurrencyLimiter(searcher, ONE_WORKER)), {}


def asha(epochs: int) -> TrialScheduler:
    from ray.tune.schedulers import AsyncHyperBandScheduler

    return AsyncHyperBandScheduler(time_attr=TIME_ATTR, max_t=epochs)


def hyperband_for_bohb(epochs: int) -> TrialScheduler:
    from ray.tune.schedulers import HyperBandForBOHB

    return HyperBandForBOHB(time_attr=TIME_ATTR, max_t=epochs, stop_last_trials=False)


@contextlib.contextmanager
def seeded_numpy(seed: int) -> Iterator[None]:
    """numpy's global generator seeded for the run, restored after it."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    # TuneBOHB warns at every result without a Hyperband budget (all of ASHA's);
    # hpbandster (2019) calls ConfigSpace 1.x's deprecated methods at every suggestion.
    logging.getLogger("ray.tune.search.bohb").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        yield


Searching = Callable[[dict[str, tuple[Any, ...]], int], tuple["SearchAlgorithm", dict[str, Any]]]


def run(searching: Searching, scheduling: Callable[[int], TrialScheduler], replay: Replay, seed: int) -> None:
    """One search, set up as tune.run sets up its search algorithm and scheduler."""
    from ray.tune.experiment import Experiment

    values = replay.table.values
    with quiet(), seeded_numpy(seed), tempfile.TemporaryDirectory(prefix="ray-replay-") as tmp:
        search_alg, config = searching(values, seed)
        scheduler = scheduling(replay.table.epochs)
        experiment = Experiment("replay", replayed_trainable, config=config, num_samples=MANY_SAMPLES, storage_path=tmp)
        if config:
            search_alg.set_search_properties(METRIC, MODE, config, **experiment.public_spec)
        scheduler.set_search_properties(METRIC, MODE, **experiment.public_spec)
        search_alg.add_configurations([experiment])
        controller = Controller(replay, search_alg, scheduler)
        with contextlib.suppress(BudgetSpent):
            controller.run()
        controller.end()


STRATEGIES: dict[str, Callable[[Replay, int], None]] = {
    "ray-asha-random": functools.partial(run, random_search, asha),
    "ray-asha-tpe": functools.partial(run, optuna_search, asha),
    "ray-asha-bohb": functools.partial(run, bohb_search, asha),
    "ray-bohb": functools.partial(run, bohb_search, hyperband_for_bohb),
}
