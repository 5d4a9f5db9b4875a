"""Every replayed strategy by label: hpo's (benchmarks/replay/optuna_hpo.py) and the peers'
(ray_tune.py, smac_dehb.py), each module imported only when one of its labels runs (SMAC's
import alone takes seconds)."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from benchmarks.replay.env import Replay

HPO = "benchmarks.replay.optuna_hpo"  # takes any SAMPLER+PRUNER label: these are the ones replayed
MODULES = {
    HPO: ("default", "random-full", "tpe-full", "tpe+hyperband", "random+hyperband",
          "tpe+successive_halving(min_resource=1,reduction_factor=3)", "tpe(n_startup_trials=5)+successive_halving",
          "tpe+hyperband(reduction_factor=2)", "tpe+hyperband(reduction_factor=4)", "tpe+hyperband(min_resource=2)",
          "tpe+median", "tpe(multivariate=false,group=false,constant_liar=false)+hyperband", "gp+successive_halving"),
    "benchmarks.replay.ray_tune": ("ray-asha-random", "ray-asha-tpe", "ray-asha-bohb", "ray-bohb"),
    "benchmarks.replay.smac_dehb": ("smac-hyperband", "smac-bohb", "dehb"),
}
LABELS = tuple(label for labels in MODULES.values() for label in labels)
# What a user would pick instead of hpo: a scan (random or TPE, no pruning) or another tool.
PEERS = ("random-full", "tpe-full", *MODULES["benchmarks.replay.ray_tune"], *MODULES["benchmarks.replay.smac_dehb"])


def strategy(label: str) -> Callable[[Replay, int], None]:
    """The run function of ``label``; a label of no module is an hpo SAMPLER+PRUNER variant."""
    for module, labels in MODULES.items():
        if label in labels and module != HPO:
            return importlib.import_module(module).STRATEGIES[label]
    from benchmarks.replay.optuna_hpo import strategy as hpo_strategy

    return hpo_strategy(label)
