"""hpo's own strategies on the replay: the sampler and pruner objects a worker builds from a
spec (hpo.spec.strategies, as hpo.worker.loop does), asking Optuna for trials and sampling
their configurations with hpo's own code (hpo.spec.space.sample_config), in an in-memory
study. What is left out of a real worker (storage, heartbeats, artifacts) changes no
decision of the sampler's or the pruner's.

A label is ``default`` (a spec that names neither sampler nor pruner), ``random-full``
(random search, every trial trained to the end: a Talos-style scan), ``tpe-full`` (TPE
without pruning), or SAMPLER[(k=v,...)]+PRUNER[(k=v,...)] in hpo's option names, as
benchmarks/search_efficiency.py reads them.
"""

from __future__ import annotations

import functools
import json
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.curves import space
from benchmarks.replay.env import BudgetSpent, Replay
from benchmarks.search_efficiency import NAMED as LIVE_NAMED

# The live benchmark's named strategies, under the replay's labels (its scans say "-full").
NAMED = {"default": LIVE_NAMED["default"], "random-full": LIVE_NAMED["random"], "tpe-full": LIVE_NAMED["tpe"]}


def search_section(values: dict[str, tuple[Any, ...]]) -> dict[str, Any]:
    """The replayed space in hpo's spec syntax: what a user would write for it."""
    section: dict[str, Any] = {}
    for name, described in space.ranges(values).items():
        param = ({"choices": described["choices"]} if "choices" in described else
                 {"low": described["low"], "high": described["high"], "log": described["log"]})
        if name in space.CONDITIONS:
            parent, value = space.CONDITIONS[name]
            param["when"] = {parent: value}
        section[name] = param
    return section


def spec_text(label: str, values: dict[str, tuple[Any, ...]], epochs: int, seed: int) -> str:
    from benchmarks.search_efficiency import strategy_sections

    sampler, pruner = NAMED.get(label) or strategy_sections(label)
    # Fixed values for the searched names (the search overrides them; a slice's single value
    # stays fixed): the table's first value of each.
    fixed = {name: choices[0] for name, choices in values.items()}
    model = dict(space.MODEL, **{n.partition(".")[2]: v for n, v in fixed.items() if n.startswith("model.")})
    train = dict(space.TRAIN, epochs=epochs, seed=0,
                 **{n.partition(".")[2]: v for n, v in fixed.items() if n.startswith("train.")})
    spec: dict[str, Any] = {
        "name": "replay", "budget": {"n_trials": 100000}, "sampler": {**sampler, "seed": seed},
        "data": space.DATA, "model": model, "train": train, "search": search_section(values),
    }
    if pruner is not None:
        spec["pruner"] = pruner
    return json.dumps(spec)  # JSON is YAML: hpo reads it as a user's file


@functools.lru_cache(maxsize=64)
def load(text: str) -> Any:
    """The spec as hpo validates a user's file (cached: the same text for every seed but
    the sampler's)."""
    from hpo.spec import load_spec

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spec.yaml"
        path.write_text(text)
        return load_spec(path)


def replayed_config(trial_config: Any) -> dict[str, Any]:
    """The table's names read off hpo's resolved trial config."""
    sections = {"data": trial_config.data, "model": trial_config.model, "train": trial_config.train}
    config = {}
    for name in space.VALUES:
        section, _, field = name.partition(".")
        config[name] = getattr(sections[section], field)
    return config


def run(label: str, replay: Replay, seed: int) -> None:
    import optuna

    from hpo.spec.space import max_epochs, sample_config, space_facts
    from hpo.spec.strategies import build_pruner, build_sampler
    from hpo.study.studies import quiet_optuna

    quiet_optuna()
    # GP's warning that sgd's momentum is sampled independently (conditional), once a trial.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    spec = load(spec_text(label, replay.table.values, replay.table.epochs, seed))
    # A fixed name: Hyperband assigns trials to brackets by a hash of the study's name and the
    # trial's number, and an unnamed study gets a random one (runs would not repeat).
    study = optuna.create_study(study_name="replay", direction="maximize",
                                storage=optuna.storages.InMemoryStorage())
    study.sampler = build_sampler(spec.sampler, rank=0, space=space_facts(spec))
    study.pruner = build_pruner(spec.pruner, max_epochs=max_epochs(spec))
    try:
        while not replay.spent:
            trial = study.ask()
            config = replayed_config(sample_config(trial, spec))
            state, value = train(replay, trial, config)
            if state == "complete":
                study.tell(trial, value)
            else:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    except BudgetSpent:
        pass


def train(replay: Replay, trial: Any, config: dict[str, Any]) -> tuple[str, float | None]:
    """One trial, epoch by epoch, told as hpo's worker tells it: reported every epoch, the
    pruner asked after every epoch but the last (TrialReporter.final_epoch), a completed
    trial's value its best epoch's (trial.objective_values), a diverged one closed as pruned
    with the worst value one epoch on (TrialRun.steer_away)."""
    replayed = replay.start(config)
    for epoch in range(1, replay.table.epochs + 1):
        value = replayed.epoch()
        if value is None:
            trial.report(-math.inf, epoch)
            replayed.finish("fail")
            return "steered", None
        trial.report(value, epoch)
        if epoch < replay.table.epochs and trial.should_prune():
            replayed.finish("pruned")
            return "pruned", value
    replayed.finish("complete")
    return "complete", max(replayed.values)


def strategy(label: str) -> Callable[[Replay, int], None]:
    """The run function of any hpo label (see the module docstring)."""
    return functools.partial(run, label)
