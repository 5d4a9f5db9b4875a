"""``hpo study create SPEC --warm-start OTHER``: a new study starts from what OTHER learned.

Two things are taken from OTHER (a study in the same storage, with the same objectives):

- its best ``top`` configurations (hpo's ranking, ``ranked_trials``) that fit the new search
  space are queued first, so the new study re-evaluates them under its own spec;
- its finished trials (complete and pruned) whose values fit the new distributions are added
  as trials of the new study, with the new distributions, so that the sampler models them
  from the first trial (TPE also leaves its random start-up trials out once it has enough).
  Their intermediate values come too: TPE ranks pruned trials by how far they got, and the
  median pruner compares new trials with their curves. (Hyperband and successive halving
  keep their rungs in system attributes, which are not copied: those pruners start afresh.)

An added trial carries ``warm_started_from`` = {"study", "trial"}: it counts towards none of the new
study's budget, ``hpo study show`` counts it apart, and it keeps its config and curves so that
the report and ``hpo study best`` can still show it (its config with the new spec's
READ_ONLY_KEYS, data.root and kin, so that retrain and confirm read the new study's data).
Trials that do not fit are left out, and each reason is one line ("12 trials left out:
train.lr outside [0.0001, 0.1] (e.g. 0.5)").

"Fits" compares the trial's resolved config with the new spec: every key the new spec
searches (where its ``when`` holds) must lie in the new distribution, and every key OTHER
searched that the new spec fixes must have the new fixed value. Before that, the two specs'
fixed configs must agree on every key neither searches (``fixed_differences``): a trial
of another dataset, number of epochs or split is another experiment, so none is taken.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hpo.errors import UsageError
from hpo.results.summary import ranked_trials
from hpo.spec.display import show
from hpo.spec.enqueue import optuna_value, value_fits
from hpo.spec.space import choice_of, fixed_config, sampling_order, to_distribution
from hpo.storage.closing import close_connections
from hpo.study.attrs import (
    CONFIG,
    CURVES,
    EPOCHS_TRAINED,
    IMAGES_PER_SECOND,
    PARAMS_TOTAL,
    PARAMS_TRAINABLE,
    PEAK_MEMORY_MB,
    PRUNED_AT_EPOCH,
    SECONDS_PER_EPOCH,
    SEED,
    WARM_START,
)
from hpo.study.studies import LoadedStudy, create_study, load_study, visible_trials
from hpo.training.config import READ_ONLY_KEYS

if TYPE_CHECKING:
    from optuna import Study
    from optuna.distributions import BaseDistribution
    from optuna.trial import FrozenTrial

    from hpo.spec.model import Spec
    from hpo.storage.urls import StorageTarget

# What an added trial keeps of its original: what readers show of a trial. Not its worker,
# checkpoints or artifacts (files in OTHER's store, which this study does not own).
_KEPT_ATTRS = (CONFIG, SEED, CURVES, EPOCHS_TRAINED, PARAMS_TOTAL, PARAMS_TRAINABLE, SECONDS_PER_EPOCH,
               IMAGES_PER_SECOND, PEAK_MEMORY_MB, PRUNED_AT_EPOCH)


@dataclass
class Fitted:
    """One trial of OTHER as parameters of the new space."""

    trial: FrozenTrial
    params: dict[str, Any]
    distributions: dict[str, BaseDistribution]


@dataclass
class WarmStart:
    """What a warm start took from ``parent`` and what it left out."""

    parent: str
    queued: list[dict[str, Any]] = field(default_factory=list)  # the best configurations, run first
    added: int = 0  # finished trials added for the sampler
    left_out: list[str] = field(default_factory=list)  # one line per reason

    def lines(self) -> list[str]:
        lines = [f"Warm start from {self.parent!r}: its best {len(self.queued)} configurations run first, "
                 f"{self.added} of its finished trials added for the sampler"]
        return lines + [f"  {line}" for line in self.left_out]


def create_warm_started(spec: Spec, target: StorageTarget, *, parent: str, top: int = 3,
                        if_exists: str = "fail", artifacts: str | None = None,
                        notes: list[str] | None = None) -> tuple[Study, bool, WarmStart | None]:
    """``create_study`` (see there), warm-started from study ``parent`` in the same storage.

    Everything about ``parent`` is checked before anything is created. A study that already
    existed (``if_exists="reuse"``) is not warm-started again: the result's WarmStart is None
    and ``notes`` says so."""
    if top < 0:
        raise UsageError(f"--top must be 0 or more (got {top})")
    if parent == spec.name:
        raise UsageError(f"--warm-start {parent}: a study cannot warm-start from itself")
    loaded = load_study(parent, target)
    try:
        return _warm_started(spec, target, loaded, top=top, if_exists=if_exists, artifacts=artifacts,
                             notes=notes)
    finally:
        close_connections(loaded.study)  # the parent is only read here


def _warm_started(spec: Spec, target: StorageTarget, loaded: LoadedStudy, *, top: int, if_exists: str,
                  artifacts: str | None, notes: list[str] | None) -> tuple[Study, bool, WarmStart | None]:
    parent = loaded.study.study_name
    _check_objectives(loaded, spec)
    fitted, left_out = fit_trials(loaded, spec)
    study, created = create_study(spec, target, if_exists=if_exists, artifacts=artifacts, notes=notes)
    if not created:
        if notes is not None:
            notes.append(f"the study existed, so it was not warm-started from {parent!r} again")
        return study, False, None
    report = WarmStart(parent, left_out=left_out)
    report.queued = _queue_best(study, loaded, fitted, top)
    report.added = _add_trials(study, parent, fitted, spec)
    return study, True, report


def _check_objectives(parent: LoadedStudy, spec: Spec) -> None:
    """Values are only comparable for the same objectives, in the same directions."""
    theirs = [f"{o.metric} ({o.direction})" for o in parent.spec.objectives]
    ours = [f"{o.metric} ({o.direction})" for o in spec.objectives]
    if theirs != ours:
        def shown(objectives: list[str]) -> str:
            return ", ".join(objectives)

        raise UsageError(f"--warm-start {parent.study.study_name}: it optimises {shown(theirs)}, this spec "
                         f"{shown(ours)}; a warm start needs the same objectives")


def fit_trials(parent: LoadedStudy, spec: Spec) -> tuple[list[Fitted], list[str]]:
    """``parent``'s finished trials that fit ``spec``'s space, and one line per reason the
    others did not."""
    from optuna.trial import TrialState

    fitted: list[Fitted] = []
    reasons: Counter[tuple[str, str]] = Counter()
    examples: dict[tuple[str, str], Any] = {}
    finished = [t for t in visible_trials(parent.study.get_trials(deepcopy=False))
                if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    differs = fixed_differences(parent.spec, spec)
    if differs:
        return [], [_left_out_line(len(finished), "the fixed config differs: " + differs)] if finished else []
    for trial in finished:
        result = _fit(trial, parent.spec, spec)
        if isinstance(result, Fitted):
            fitted.append(result)
        else:
            key, why, value = result
            reasons[key, why] += 1
            examples.setdefault((key, why), value)
    left_out = [_left_out_line(count, f"{key} {why} (e.g. {key}={_shown(examples[key, why])})")
                for (key, why), count in reasons.most_common()]
    return fitted, left_out


def _left_out_line(count: int, why: str) -> str:
    return f"{count} trial{'s' if count > 1 else ''} left out: {why}"


# How many differing keys the left-out line names; the rest are counted.
_SHOWN_DIFFERENCES = 3
# Fixed values that may differ between the two specs: where and how the data is read, and the
# training seed (another seed repeats the same experiment; its scores are the noise the
# sampler models anyway).
_NOT_THE_EXPERIMENT = (*READ_ONLY_KEYS, "train.seed")


def fixed_differences(theirs: Spec, ours: Spec) -> str:
    """The keys of data/model/train that neither spec searches but that the two fix to
    different values, as "key is A there, B here; ...", or "" when they agree.

    Strict on purpose: every fixed value is part of the experiment (the dataset, its split,
    the epochs, the model's shape), and telling the ones that change the results from those
    that do not would be a guess that can go wrong. Only ``_NOT_THE_EXPERIMENT`` is left out:
    where and how the data is read (it differs between machines) and the training seed."""
    searched = [*theirs.search, *ours.search]
    there, here = _leaves(fixed_config(theirs)), _leaves(fixed_config(ours))
    missing = object()
    differing = [key for key in sorted(there.keys() | here.keys())
                 if not _touches_searched(key, searched) and key not in _NOT_THE_EXPERIMENT
                 and there.get(key, missing) != here.get(key, missing)]

    def shown(values: dict[str, Any], key: str) -> str:
        return show(values[key]) if key in values else "not set"

    parts = [f"{key} is {shown(there, key)} there, {shown(here, key)} here" for key in differing[:_SHOWN_DIFFERENCES]]
    more = len(differing) - _SHOWN_DIFFERENCES
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _leaves(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted path -> value for every value that is not a mapping (a list is one value)."""
    leaves: dict[str, Any] = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            leaves.update(_leaves(value, f"{path}."))
        else:
            leaves[path] = value
    return leaves


def _touches_searched(path: str, searched: list[str]) -> bool:
    """A searched key decides ``path`` when it is the path, lies inside it or holds it."""
    return any(path == key or path.startswith(f"{key}.") or key.startswith(f"{path}.") for key in searched)


def _shown(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else show(value)


def _fit(trial: FrozenTrial, theirs: Spec, ours: Spec) -> Fitted | tuple[str, str, Any]:
    """The trial as parameters of ``ours``, or (key, why, value) of the first misfit."""
    values = _Values(trial, ours)
    params: dict[str, Any] = {}
    distributions: dict[str, BaseDistribution] = {}
    for key in sampling_order(ours.search):
        param = ours.search[key]
        if not all(values.get(path) in accepted for path, accepted in param.condition().items()):
            continue
        value = values.get(key)
        items = value if param.repeat else [value]
        if param.repeat and not isinstance(value, list):
            return key, "has no list of values", value
        names = [f"{key}[{i}]" for i in range(len(items))] if param.repeat else [key]
        for name, item in zip(names, items):
            item = choice_of(ours, key, item)  # a recorded list of steps as the choice it was
            why = value_fits(param, item)
            if why:
                return key, why, item
            params[name] = optuna_value(param, item)  # a list choice by its label
            distributions[name] = to_distribution(param)
    for key in theirs.search:
        if key not in ours.search and values.get(key) != values.fixed(key):
            return key, f"is not searched here and fixed to {show(values.fixed(key))}", values.get(key)
    return Fitted(trial, params, distributions)


class _Values:
    """A trial's value at a dotted path: its resolved config (what it trained with), else its
    parameters, else the new spec's fixed value."""

    def __init__(self, trial: FrozenTrial, spec: Spec):
        self.config = trial.user_attrs.get(CONFIG) or {}
        self.params = trial.params
        self.defaults = fixed_config(spec)

    def get(self, path: str) -> Any:
        found, value = _lookup(self.config, path)
        if found:
            return value
        if path in self.params:
            return self.params[path]
        repeated = [self.params[f"{path}[{i}]"] for i in range(len(self.params)) if f"{path}[{i}]" in self.params]
        return repeated if repeated else self.fixed(path)

    def fixed(self, path: str) -> Any:
        return _lookup(self.defaults, path)[1]


def _lookup(config: dict[str, Any], path: str) -> tuple[bool, Any]:
    node: Any = config
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _queue_best(study: Study, parent: LoadedStudy, fitted: list[Fitted], top: int) -> list[dict[str, Any]]:
    """Queue the best ``top`` fitting configurations (hpo's ranking), best first."""
    by_number = {f.trial.number: f for f in fitted}
    ranked = ranked_trials(parent.study, [f.trial for f in fitted])[:top]
    queued = []
    for record in ranked:
        params = by_number[record.number].params
        study.enqueue_trial(params, skip_if_exists=True)  # an enqueue: set may have queued it
        queued.append(params)
    return queued


def _add_trials(study: Study, parent: str, fitted: list[Fitted], spec: Spec) -> int:
    """Add the fitting trials, with the new distributions, marked as the warm start's."""
    from optuna.trial import TrialState, create_trial

    reading = _reading(spec)
    trials = []
    for f in fitted:
        attrs = {key: f.trial.user_attrs[key] for key in _KEPT_ATTRS if key in f.trial.user_attrs}
        if isinstance(attrs.get(CONFIG), dict):
            attrs[CONFIG] = _read_as_here(attrs[CONFIG], reading)
        attrs[WARM_START] = {"study": parent, "trial": f.trial.number}
        complete = f.trial.state == TrialState.COMPLETE
        trials.append(create_trial(
            state=f.trial.state, values=f.trial.values if complete else None,
            params=f.params, distributions=f.distributions, user_attrs=attrs,
            intermediate_values=dict(f.trial.intermediate_values),
        ))
    study.add_trials(trials)
    return len(trials)


def _reading(spec: Spec) -> dict[str, dict[str, Any]]:
    """Where and how ``spec`` reads its data (READ_ONLY_KEYS), per config section."""
    ours = fixed_config(spec)
    reading: dict[str, dict[str, Any]] = {}
    for key in READ_ONLY_KEYS:
        section, _, name = key.partition(".")
        reading.setdefault(section, {})[name] = ours[section][name]
    return reading


def _read_as_here(config: dict[str, Any], reading: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """An added trial's config with the new study's ``reading`` in place of the parent's.
    Those keys are not compared (``fixed_differences``: a laptop's data root is the same
    experiment as a cluster's), so the parent's values are nothing this study can use:
    retrain, confirm and load_model on the trial must read this study's data."""
    copied = dict(config)
    for section, values in reading.items():
        stored = copied.get(section)
        copied[section] = {**(stored if isinstance(stored, dict) else {}), **values}
    return copied
