"""Spec ``search`` -> Optuna suggestions -> the full resolved config of one trial.

``when`` conditions and ``repeat`` counts make the space conditional, so parameters are
sampled in dependency order; the resolved config is then validated by the same pydantic
models as a fixed config, which fills in every default and makes it re-runnable.
"""

from __future__ import annotations

import copy
import graphlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from hpo.errors import HpoError
from hpo.models.registry import MODELS
from hpo.spec.finite import configurations, count_configurations, infinite_keys
from hpo.spec.model import SearchParam, Spec, choice_label
from hpo.spec.paths import SECTIONS
from hpo.spec.problems import from_validation_error
from hpo.spec.strategies import RandomOptions, SpaceFacts
from hpo.spec.trial_config import TrialConfig
from hpo.spec.validate import dependencies
from hpo.training.config import SEARCHED_REPLACES, DataConfig, TrainConfig

if TYPE_CHECKING:  # optuna's import is paid only where a study runs
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
    from optuna.trial import Trial


def sampling_order(search: dict[str, SearchParam]) -> list[str]:
    """Keys in spec order, except that a parameter comes after those it depends on."""
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for key, param in search.items():
        sorter.add(key, *sorted(dependencies(param, search), key=list(search).index))
    order: list[str] = []
    sorter.prepare()
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=list(search).index)
        order.extend(ready)
        sorter.done(*ready)
    return order


def to_distribution(param: SearchParam) -> CategoricalDistribution | IntDistribution | FloatDistribution:
    """The Optuna distribution of a validated parameter (validation made sure that a numeric
    one has both bounds and a categorical one its choices)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    kind = param.kind()
    if kind == "categorical":
        assert param.choices is not None
        return CategoricalDistribution(param.labels())
    assert param.low is not None and param.high is not None
    if kind == "int":
        return IntDistribution(int(param.low), int(param.high), log=param.log, step=int(param.step or 1))
    return FloatDistribution(float(param.low), float(param.high), log=param.log,
                             step=None if param.step is None else float(param.step))


def space_facts(spec: Spec, all_trials: Callable[[Any], Sequence[Any]] | None = None) -> SpaceFacts:
    """What the sampler needs to know of the spec's search space (``all_trials``: how it
    reads every trial of the study, see SpaceFacts)."""
    unique = isinstance(spec.sampler, RandomOptions) and spec.sampler.unique
    return SpaceFacts(
        grid={key: param.labels() for key, param in spec.search.items()},
        conditional=any(param.when or param.repeat for param in spec.search.values()),
        configurations=tuple(configurations(spec.search, fixed_lookup(spec))) if unique else (),
        all_trials=all_trials,
    )


def fixed_lookup(spec: Spec) -> Callable[[str], Any]:
    """The value a dotted path has when it is not sampled (``hpo.spec.finite``'s lookup)."""
    fixed = fixed_config(spec)
    return lambda path: _lookup(path, {}, fixed)


def space_size(spec: Spec) -> int | None:
    """How many configurations the search space has; None when it is infinite."""
    if infinite_keys(spec.search):
        return None
    return count_configurations(spec.search, fixed_lookup(spec))


def max_epochs(spec: Spec) -> int:
    """The most epochs any trial can train: the pruner's full budget (``max_resource``)."""
    param = spec.search.get("train.epochs")
    if param is None:
        return spec.train.epochs
    values = param.choices if param.choices is not None else [param.high]
    return max(int(v) for v in values if isinstance(v, int | float))


def fixed_config(spec: Spec) -> dict[str, Any]:
    return {section: getattr(spec, section).model_dump(mode="json") for section in SECTIONS}


def sample_config(trial: Trial, spec: Spec) -> TrialConfig:
    """Ask ``trial`` for every searched value that applies; return the resolved config."""
    fixed = fixed_config(spec)
    sampled: dict[str, Any] = {}
    for key in sampling_order(spec.search):
        param = spec.search[key]
        if not _condition_holds(param, sampled, fixed):
            continue
        if param.repeat:
            count = _lookup(param.repeat, sampled, fixed)
            sampled[key] = [suggest(trial, f"{key}[{i}]", param) for i in range(count)]
        else:
            sampled[key] = suggest(trial, key, param)
    return resolve(fixed, sampled)


def suggest(trial: Trial, name: str, param: SearchParam) -> Any:
    from optuna.distributions import CategoricalDistribution, IntDistribution

    d = to_distribution(param)
    if isinstance(d, CategoricalDistribution):
        # Optuna holds the label; the config gets the choice it stands for (a list of steps).
        index = param.choice_index(trial.suggest_categorical(name, d.choices))
        assert param.choices is not None and index is not None
        return param.choices[index]
    if isinstance(d, IntDistribution):
        return trial.suggest_int(name, d.low, d.high, step=d.step, log=d.log)
    return trial.suggest_float(name, d.low, d.high, step=d.step, log=d.log)


def resolve(fixed: dict[str, Any], sampled: dict[str, Any]) -> TrialConfig:
    """Apply sampled values to the fixed config and validate each section (fills defaults)."""

    config = copy.deepcopy(fixed)
    family = sampled.get("model.name", config["model"]["name"])
    if family != config["model"]["name"]:
        # Switching family keeps only the fixed keys the new family also has.
        fields = MODELS.get(family).config.model_fields
        config["model"] = {k: v for k, v in config["model"].items() if k in fields}
    for key, value in sampled.items():
        section, *parts = key.split(".")
        node = config[section]
        for part in parts[:-1]:
            node = _child(node, part)
        node[parts[-1]] = value
    for key in sampled.keys() & SEARCHED_REPLACES.keys():
        section, field = SEARCHED_REPLACES[key].split(".")
        config[section][field] = None
    try:
        return TrialConfig.from_json(config)
    except ValidationError as exc:
        raise HpoError(f"the sampled configuration is invalid: {_one_line(exc, config)}") from None
    except ValueError as exc:  # raised outside a section's validation (an unknown family)
        raise HpoError(f"the sampled configuration is invalid: {exc}") from None


def _one_line(exc: ValidationError, config: dict[str, Any]) -> str:
    """``model.width: ... (got -1)``, as a spec problem reads: pydantic's own text spans lines
    and names classes. The section is told by the class that failed (sections are validated
    one by one)."""
    section = {DataConfig.__name__: "data", TrainConfig.__name__: "train"}.get(exc.title, "model")
    sections: dict[str, type[BaseModel]] = {"data": DataConfig, "train": TrainConfig}
    cls = sections.get(section) or MODELS.get(config["model"]["name"]).config
    return "; ".join(p.format(None) for p in from_validation_error(exc, config[section], (section,), cls))


def choice_of(spec: Spec, key: str, value: Any) -> Any:
    """The choice of ``spec.search[key]`` that ``value`` means, as the spec writes it; ``value``
    itself when it means none. A trial's recorded config holds a list of steps with every
    default filled in (``[{name: hflip, p: 0.5}]``), so each choice is resolved the same way
    and compared (a warm start reads another study's configs)."""
    param = spec.search[key]
    if param.choices is None or param.repeat or param.choice_index(value) is not None:
        return value
    fixed = fixed_config(spec)

    def resolved(candidate: Any) -> Any:
        try:
            return _lookup(key, {}, resolve(fixed, {key: candidate}).to_json())
        except HpoError:
            return None

    meant = resolved(value)
    matches = [c for c in param.choices if meant is not None and resolved(c) == meant]
    return matches[0] if matches else value


def _child(node: dict[str, Any] | list[Any], part: str) -> dict[str, Any]:
    """The mapping one step further down a searched path. In a list of named steps (such as
    ``data.augment``) a part is a step's name: ``data.augment.rotation.enabled``; validation
    made sure exactly one step has it."""
    if isinstance(node, list):
        index = next(i for i, item in enumerate(node) if _step_name(item) == part)
        if isinstance(node[index], str):
            node[index] = {"name": node[index]}
        return node[index]
    if not isinstance(node.get(part), dict | list):
        node[part] = {}  # e.g. train.early_stopping is null until a key is searched
    return node[part]


def _step_name(item: Any) -> Any:
    """The name of a step written as ``name`` or ``{name: ..., ...}``."""
    return item.get("name") if isinstance(item, dict) else item


def _lookup(path: str, sampled: dict[str, Any], fixed: dict[str, Any]) -> Any:
    if path in sampled:
        return sampled[path]
    node: Any = fixed
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _condition_holds(param: SearchParam, sampled: dict[str, Any], fixed: dict[str, Any]) -> bool:
    # A list value (a searched list of steps) is compared by its label, as conditions name it.
    return all(choice_label(_lookup(path, sampled, fixed)) in accepted
               for path, accepted in param.condition().items())


def preview(spec: Spec, n: int, seed: int = 0) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """``n`` (params, resolved config) pairs drawn at random, without training anything."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    drawn = []
    for _ in range(n):
        trial = study.ask()
        config = sample_config(trial, spec)
        drawn.append((dict(trial.params), config.to_json()))
        study.tell(trial, 0.0)
    return drawn
