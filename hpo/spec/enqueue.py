"""The spec's ``enqueue:``: (partial) parameter sets a study evaluates first.

Each set maps searched keys to values (``{model.name: cnn, train.lr: 1e-3}``); the sampler
fills in what a set leaves out. A repeated key takes its list as a trial gets it
(``model.filters: [16, 32]`` for two blocks); a list choice is given as written or by its
label (``data.augment: hflip+rotation``). Values are checked against the ``search``
distributions here, with the spec's other problems, so a typo fails ``hpo study create``
rather than a trial. ``value_fits`` is also what a warm start asks of another study's values.
"""

from __future__ import annotations

import math
from typing import Any

from hpo.spec.model import SearchParam, Spec
from hpo.spec.paths import ConfigPaths
from hpo.spec.problems import Problem, did_you_mean


def value_fits(param: SearchParam, value: Any) -> str | None:
    """Why ``value`` is not one ``param``'s distribution can give (``outside [1e-05, 0.1]``),
    or None when it is."""
    if param.choices is not None:
        return None if param.choice_index(value) is not None else "not one of: " + ", ".join(map(str, param.labels()))
    assert param.low is not None and param.high is not None
    is_int = param.kind() == "int"
    # Finite first: int() of .inf or .nan (YAML's, or 1e400) raises rather than answers.
    numeric = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not numeric or (is_int and float(value) != int(value)):
        return f"not {'an integer' if is_int else 'a number'} in [{param.low:g}, {param.high:g}]"
    if not param.low <= value <= param.high:
        return f"outside [{param.low:g}, {param.high:g}]"
    if param.step is not None:
        steps = (value - param.low) / param.step
        if abs(steps - round(steps)) > 1e-9:
            return f"not on the grid {param.low:g} + k * {param.step:g}"
    return None


def enqueue_problems(section: Any, search: dict[str, SearchParam], paths: ConfigPaths) -> list[Problem]:
    """Problems of ``enqueue:``, checked against the (validated) ``search`` parameters."""
    if section is None:
        return []
    if not isinstance(section, list):
        return [Problem(("enqueue",), "wrong type", section, ["a list of mappings such as [{train.lr: 0.01}]"])]
    problems = []
    for index, entry in enumerate(section):
        at = ("enqueue", index)
        if not isinstance(entry, dict) or not entry:
            problems.append(Problem(at, "wrong type" if not isinstance(entry, dict) else "the set is empty",
                                    entry, ["a mapping of searched keys to values, such as {train.lr: 0.01}"]))
            continue
        for key, value in entry.items():
            problems += _entry_value(at + (key,), key, value, entry, search, paths)
    return problems


def _entry_value(at: tuple[Any, ...], key: Any, value: Any, entry: dict[str, Any],
                 search: dict[str, SearchParam], paths: ConfigPaths) -> list[Problem]:
    param = search.get(key)
    if param is None:
        return [Problem(at, "not a searched key", key, did_you_mean(key, list(search)))]
    problems = _conditions(at, key, param, entry)
    if not param.repeat:
        reason = value_fits(param, value)
        return problems + ([Problem(at, f"not a value {key} is searched over", value, [_accepted(param)])]
                           if reason else [])
    count = entry.get(param.repeat, None if param.repeat in search else paths.fixed_value(param.repeat))
    if count is None:
        return problems + [Problem(at, f"{key} is repeated {param.repeat} times: give {param.repeat} in the "
                                   "same set", expected=[f"{{{param.repeat}: N, {key}: [N values]}}"])]
    if not isinstance(value, list) or len(value) != count:
        return problems + [Problem(at, f"{key} takes one value per {param.repeat} ({count} here)", value,
                                   [f"a list of {count} values"])]
    for position, item in enumerate(value):
        reason = value_fits(param, item)
        if reason:
            problems.append(Problem(at + (position,), f"not a value {key} is searched over", item,
                                    [_accepted(param)]))
    return problems


def _conditions(at: tuple[Any, ...], key: str, param: SearchParam, entry: dict[str, Any]) -> list[Problem]:
    """A value for a key the same set's other values keep from being sampled would be ignored."""
    return [
        Problem(at, f"{key} is sampled only when {path} is {' or '.join(map(str, accepted))}, and this set "
                f"gives {path} = {entry[path]}", key, [f"leave {key} out of this set, or change {path}"])
        for path, accepted in param.condition().items()
        if path in entry and entry[path] not in accepted
    ]


def _accepted(param: SearchParam) -> str:
    if param.choices is not None:
        return "one of: " + ", ".join(map(str, param.labels()))
    kind = "an integer" if param.kind() == "int" else "a number"
    step = f" in steps of {param.step:g}" if param.step is not None else ""
    return f"{kind} in [{param.low:g}, {param.high:g}]{step}"


def enqueue_params(spec: Spec, entry: dict[str, Any]) -> dict[str, Any]:
    """An ``enqueue:`` set as Optuna parameters (a repeated key's list as ``key[i]``, floats of
    a float distribution as floats, which Optuna compares by type)."""
    params: dict[str, Any] = {}
    for key, value in entry.items():
        param = spec.search[key]
        values = value if param.repeat else [value]
        names = [f"{key}[{i}]" for i in range(len(values))] if param.repeat else [key]
        for name, item in zip(names, values):
            params[name] = optuna_value(param, item)
    return params


def optuna_value(param: SearchParam, value: Any) -> Any:
    """A value that fits ``param`` (see value_fits) as Optuna stores it: a choice by its label
    (a list of steps as ``hflip+rotation``), a float distribution's value as a float."""
    if param.choices is not None:
        index = param.choice_index(value)
        assert index is not None, "checked by value_fits"
        return param.labels()[index]
    return float(value) if param.kind() == "float" else value
