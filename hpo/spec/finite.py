"""A finite search space as its full configurations: counted, enumerated, shared out.

``sampler: {name: random, unique: true}`` hands each trial a configuration no trial has had,
and ``budget.n_trials: 20%`` is a share of the configurations; both need the space's
configurations exactly as ``hpo.spec.space.sample_config`` produces them: ``when`` conditions
leave parameters out, ``repeat`` counts make one parameter several (``key[0]``, ``key[1]``,
...). A parameter whose condition fails keeps its fixed value for the conditions that name
it, as in ``sample_config``.

This module sits below the validator (which resolves shares and reports infinite spaces),
so it takes the fixed values as a lookup function instead of a Spec, and reads only
``SearchParam``s. Optuna has no enumeration of conditional spaces (its GridSampler takes one
product of lists), hence the hand-written walk.
"""

from __future__ import annotations

import graphlib
import itertools
import math
import re
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from typing import Any

from hpo.spec.model import SHARE_PATTERN, SearchParam, choice_label

FixedLookup = Callable[[str], Any]

# Unique random sampling keeps every configuration in memory in each worker (compared with
# the used ones at each trial): 20,000 took 0.4 s to build and ~40 MB (100,000: 1.6 s and
# ~150 MB, too much for a worker's start); above it plain random sampling repeats rarely anyway.
MAX_UNIQUE_CONFIGURATIONS = 20_000

_SHARE = re.compile(SHARE_PATTERN)


def parse_share(value: Any) -> float | None:
    """The percentage in ``"20%"`` (20.0), or None when ``value`` is not such a string."""
    match = _SHARE.match(value) if isinstance(value, str) else None
    return float(match.group(1)) if match else None


def trials_for_share(share: float, size: int) -> int:
    """``share`` percent of ``size`` configurations, rounded up: at least one trial."""
    return max(1, math.ceil(Decimal(str(share)) * size / 100))


def param_values(param: SearchParam) -> list[Any] | None:
    """Every value ``param`` can take, in order, as Optuna records them; None for a range
    without a step (infinitely many)."""
    if param.choices is not None:
        return param.labels()  # what Optuna holds (a list choice by its label)
    assert param.low is not None and param.high is not None
    if param.kind() == "int":
        return list(range(int(param.low), int(param.high) + 1, int(param.step or 1)))
    if param.low == param.high:
        return [float(param.low)]
    if param.step is None:
        return None
    # Optuna's FloatDistribution rounds high down to low + k * step (with Decimal), and its
    # samplers return k * step + low: the same values, computed the same way.
    steps = int((Decimal(str(param.high)) - Decimal(str(param.low))) // Decimal(str(param.step)))
    return [k * float(param.step) + float(param.low) for k in range(steps + 1)]


def infinite_keys(search: Mapping[str, SearchParam]) -> list[str]:
    """The searched keys that make the space infinite: ranges of floats without a step."""
    return [key for key, param in search.items() if param_values(param) is None]


def count_configurations(search: Mapping[str, SearchParam], fixed: FixedLookup) -> int:
    """How many distinct configurations the (finite) space has. Values no condition or count
    depends on multiply; only the others are branched on, so large spaces count quickly."""
    order = _order(search)
    named = {path for param in search.values() for path in _needs(param, search)}

    def count(i: int, decided: dict[str, Any]) -> int:
        if i == len(order):
            return 1
        key = order[i]
        param = search[key]
        if not _applies(param, decided, fixed):
            return count(i + 1, decided)
        values = _values(param)
        if key in named:  # validation allows neither conditions nor counts on a repeated key
            return sum(count(i + 1, {**decided, key: value}) for value in values)
        times = _lookup(param.repeat, decided, fixed) if param.repeat else 1
        return len(values) ** times * count(i + 1, decided)

    return count(0, {})


def configurations(search: Mapping[str, SearchParam], fixed: FixedLookup) -> Iterator[dict[str, Any]]:
    """Every configuration of the (finite) space, as the trial parameters Optuna records:
    ``{"model.name": "mlp", "model.width": 64, "model.filters[0]": 16, ...}``."""
    order = _order(search)

    def walk(i: int, decided: dict[str, Any], params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        if i == len(order):
            yield params
            return
        key = order[i]
        param = search[key]
        if not _applies(param, decided, fixed):
            yield from walk(i + 1, decided, params)
            return
        values = _values(param)
        if param.repeat:
            times = _lookup(param.repeat, decided, fixed)
            for combo in itertools.product(values, repeat=times):
                repeated = {f"{key}[{j}]": value for j, value in enumerate(combo)}
                yield from walk(i + 1, {**decided, key: list(combo)}, {**params, **repeated})
            return
        for value in values:
            yield from walk(i + 1, {**decided, key: value}, {**params, key: value})

    return walk(0, {}, {})


def _values(param: SearchParam) -> list[Any]:
    values = param_values(param)
    if values is None:
        raise ValueError("the search space is infinite: a float range has no step")
    return values


def _needs(param: SearchParam, search: Mapping[str, SearchParam]) -> set[str]:
    """The searched keys whose values decide whether, or how often, ``param`` is sampled."""
    needed = set(param.condition()) | ({param.repeat} if param.repeat else set())
    return needed & set(search)


def _order(search: Mapping[str, SearchParam]) -> list[str]:
    """Keys after those they depend on (any such order walks the same configurations)."""
    sorter = graphlib.TopologicalSorter({key: _needs(param, search) for key, param in search.items()})
    return list(sorter.static_order())


def _lookup(path: str, decided: dict[str, Any], fixed: FixedLookup) -> Any:
    return decided[path] if path in decided else fixed(path)


def _applies(param: SearchParam, decided: dict[str, Any], fixed: FixedLookup) -> bool:
    # Conditions name a list value (of steps) by its label, as in sample_config.
    return all(choice_label(_lookup(path, decided, fixed)) in accepted
               for path, accepted in param.condition().items())
