"""SMAC3's and DEHB's optimisers on the replay, driven through their own ask/tell interfaces
(one sequential worker: no Dask cluster, no runner). Both evaluate a configuration at a
budget of epochs, which the replay answers with ``Replay.evaluate`` (a configuration
promoted to a higher budget continues its earlier run).

- ``smac-hyperband``: smac.HyperbandFacade, random configurations raced by SMAC's Hyperband
  intensifier (eta 3, SMAC's default).
- ``smac-bohb``: smac.MultiFidelityFacade, SMAC's random-forest model proposing the
  configurations of the same Hyperband (SMAC's BOHB-like setup), after 5 random ones as
  SMAC's own multi-fidelity example (examples/2_multi_fidelity/1_mlp_epochs.py) sets it:
  the facade's default, 10 per hyperparameter (90 here), outlasts a replay of 480 epochs
  (about 75 evaluations), and the model would never be asked. Reproducible for a seed only
  under a fixed PYTHONHASHSEED: SMAC's local search dedupes its start points through a set of
  Configurations, which hash by their repr (a string), so their order varies by process.
- ``dehb``: dehb.DEHB, differential evolution inside Hyperband's brackets (eta 3).

Both libraries space their budgets geometrically from the maximum (eta 3 over 1..20 epochs
gives 20/9, 20/3 and 20): a budget is rounded to the nearest whole epoch, at least 1.
The cost they minimise is 1 - validation accuracy; a failed run (non-finite loss) costs 1.0,
an accuracy of zero, rather than SMAC's default crash cost of infinity, which its random
forest cannot fit (SMAC is told StatusType.CRASHED with it). SMAC's scenario is
deterministic: the replay's noise is which table seed a run draws, which SMAC cannot choose
(its Hyperband uses one seed a configuration either way). Their files (SMAC's output
directory, DEHB's output path) go to a temporary directory removed after the run, and their
logging is silenced.
"""

from __future__ import annotations

import functools
import logging
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.curves import space
from benchmarks.replay.env import BudgetSpent, Replay

FAILED_COST = 1.0  # a failed run scores as an accuracy of zero
ETA = 3  # SMAC's Hyperband default, and DEHB's
BOHB_INITIAL_CONFIGS = 5
MANY_TRIALS = 10**6  # SMAC's n_trials: never the limit, the replay's budget is


def configspace(values: dict[str, tuple[Any, ...]], seed: int) -> Any:
    """The replayed space (space.ranges: what every strategy is given) as a ConfigSpace,
    ``train.momentum`` active only for sgd."""
    from ConfigSpace import Categorical, ConfigurationSpace, EqualsCondition, Float, Integer

    cs = ConfigurationSpace(seed=seed)
    for name, described in space.ranges(values).items():
        if "choices" in described:
            cs.add(Categorical(name, described["choices"]))
        elif described["integer"]:
            cs.add(Integer(name, (described["low"], described["high"]), log=described["log"]))
        else:
            cs.add(Float(name, (float(described["low"]), float(described["high"])), log=described["log"]))
    for name, (parent, value) in space.CONDITIONS.items():
        if name in cs and parent in cs:
            cs.add(EqualsCondition(cs[name], cs[parent], value))
    return cs


def table_config(configuration: Any, values: dict[str, tuple[Any, ...]]) -> dict[str, Any]:
    """A ConfigSpace configuration as the replay takes it: plain Python values (ConfigSpace
    hands back numpy scalars), plus the names this table fixes (space.ranges leaves out a
    name of one value)."""
    config = {name: value.item() if hasattr(value, "item") else value for name, value in dict(configuration).items()}
    for name, choices in values.items():
        if len(choices) == 1 and name not in config:
            config[name] = choices[0]
    return {name: value for name, value in config.items() if space.active(name, config)}


def whole_epochs(budget: float) -> int:
    """A library's (float) budget as epochs: the nearest whole number, at least one."""
    return max(1, round(float(budget)))


def cost(value: float | None) -> float:
    return FAILED_COST if value is None else 1.0 - value


def quiet_smac() -> None:
    # logging_level=False keeps SMAC from calling logging.config.dictConfig, which would
    # reconfigure (and disable) every other logger in the process; its own loggers are
    # only turned down here.
    logging.getLogger("smac").setLevel(logging.ERROR)


def cheap_model(facade: Any, scenario: Any) -> Any:
    """The facade's own model; its random forest (smac-bohb's) with the same unlimited trees,
    built without two costs that made a replayed run of 480 epochs take 10-14 s instead of
    2-3 (measured on two busy cores):
    ``max_leaf_nodes=2**20`` (as good as no limit, but it makes scikit-learn grow each tree
    best-first in an array preallocated for 2**21 nodes, 0.1 s a tree whatever the data;
    None grows the same kind of tree depth-first), and a thread per core (n_jobs=-1) for ten
    trees on a hundred points, whose hand-offs cost more than the trees (the replay runs its
    own processes)."""
    from smac.model.random_forest import RandomForest

    model = facade.get_model(scenario)
    if isinstance(model, RandomForest):
        # RandomForest takes neither through its facade's get_model; these are its
        # constructor's arguments as it keeps them for each fit.
        model._rf_opts.update(max_leaf_nodes=None, n_jobs=1)
    return model


def run_smac(facade_name: str, initial_configs: int | None, replay: Replay, seed: int) -> None:
    """``initial_configs``: random configurations before the facade's model proposes (None:
    the facade's own initial design)."""
    import smac
    from smac.runhistory.dataclasses import TrialValue
    from smac.runhistory.enumerations import StatusType

    quiet_smac()
    values = replay.table.values
    with tempfile.TemporaryDirectory(prefix="smac-replay-") as tmp:
        scenario = smac.Scenario(configspace(values, seed), name="replay", output_directory=Path(tmp),
                                 deterministic=True, n_trials=MANY_TRIALS, min_budget=1,
                                 max_budget=replay.table.epochs, seed=seed)
        facade = getattr(smac, facade_name)
        initial_design = (None if initial_configs is None else
                          facade.get_initial_design(scenario, n_configs=initial_configs))
        optimiser = facade(scenario, target_function=None, model=cheap_model(facade, scenario),
                           intensifier=facade.get_intensifier(scenario, eta=ETA), initial_design=initial_design,
                           logging_level=False, overwrite=True)
        try:
            while not replay.spent:
                info = optimiser.ask()
                value = replay.evaluate(table_config(info.config, values), whole_epochs(info.budget))
                status = StatusType.CRASHED if value is None else StatusType.SUCCESS
                optimiser.tell(info, TrialValue(cost=cost(value), status=status), save=False)
        except BudgetSpent:
            pass


@functools.cache
def quiet_dehb() -> type:
    """DEHB as it is, less its log file: each instance adds a loguru file sink (with a writer
    thread) that it never removes, and a replay makes hundreds of instances in one process.
    Its messages are disabled too (its import sends them to stdout at INFO)."""
    from dehb import DEHB  # type: ignore[import-untyped]
    from loguru import logger

    logger.disable("dehb")

    class QuietDEHB(DEHB):
        def _setup_logger(self, kwargs: dict[str, Any]) -> None:
            self.output_path = Path(kwargs["output_path"])
            self.output_path.mkdir(parents=True, exist_ok=True)
            self.logger = logger
            self.log_filename = None

    return QuietDEHB


def run_dehb(replay: Replay, seed: int) -> None:
    values = replay.table.values
    # DEHB 0.1.1 calls ConfigSpace's pre-1.0 names (get_hyperparameters, get_dictionary), each
    # a DeprecationWarning, thousands a run.
    with tempfile.TemporaryDirectory(prefix="dehb-replay-") as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"dehb\.")
        # save_freq "end": DEHB saves only when its own run() ends, which ask/tell never calls.
        optimiser = quiet_dehb()(cs=configspace(values, seed), min_fidelity=1, max_fidelity=replay.table.epochs,
                                 eta=ETA, n_workers=1, seed=seed, output_path=tmp, save_freq="end")
        try:
            while not replay.spent:
                job = optimiser.ask()
                epochs = whole_epochs(job["fidelity"])
                value = replay.evaluate(table_config(job["config"], values), epochs)
                optimiser.tell(job, {"fitness": cost(value), "cost": epochs})
        except BudgetSpent:
            pass


STRATEGIES: dict[str, Callable[[Replay, int], None]] = {
    "smac-hyperband": functools.partial(run_smac, "HyperbandFacade", None),
    "smac-bohb": functools.partial(run_smac, "MultiFidelityFacade", BOHB_INITIAL_CONFIGS),
    "dehb": run_dehb,
}
