"""Validate a spec and collect every problem, each tied to its line.

Validation is strict: YAML already says what type a value is, so ``"5"`` is not an
integer and YAML 1.1's ``yes`` is not a boolean.

Sections are validated one by one (rather than in one pydantic call) so that a wrong
``model.name`` does not hide a wrong ``train.lr``, and so that the model family chosen
by ``name`` decides which keys are allowed under ``model``.
"""

from __future__ import annotations

import graphlib
import math
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationError

from hpo.errors import SpecError
from hpo.registry import Registry
from hpo.spec.finite_checks import budget_without_share, finite_problems, resolve_share
from hpo.spec.model import (
    EPOCH_METRICS,
    TRIAL_METRICS,
    Budget,
    Objective,
    SearchParam,
    Spec,
    choice_label,
    default_pruner,
)
from hpo.spec.paths import SECTIONS, ConfigPaths
from hpo.spec.problems import Problem, did_you_mean, from_validation_error
from hpo.spec.strategies import PRUNERS, SAMPLERS
from hpo.spec.yaml_source import KeyPath, YamlSource

# Values one repeat may sample: more than any family's count allows (n_layers, n_fire <= 16),
# and few enough that a count such as train.seed cannot make a trial sample millions.
MAX_REPEAT = 64

TOP_LEVEL = ("name", "objective", "budget", "sampler", "pruner", "data", "model", "train", "search", "enqueue")


def validate_source(source: YamlSource, name: str | None = None) -> Spec:
    """The frozen Spec, or SpecError listing every problem as ``FILE:LINE: ...``."""
    if name is not None:
        _check_name_option(name)
    raw = _nulls_as_empty(source.data)
    problems = collect_problems(raw, name)
    if problems:
        problems.sort(key=lambda p: source.line_of(p.path))
        raise SpecError([p.format(source) for p in problems])
    data = resolve_share(dict(raw), _model(raw)[1])
    if name is not None:
        data["name"] = name
    return Spec.model_validate(data, strict=True)


# Sections a null leaves empty: ``search:`` with every entry commented out reads as null.
_EMPTY_WHEN_NULL = ("search", "enqueue")


def _nulls_as_empty(raw: Any) -> Any:
    """``raw`` without the sections in ``_EMPTY_WHEN_NULL`` that are null, so they take their
    empty default (and the spec its hash without them)."""
    if not isinstance(raw, dict):
        return raw
    return {k: v for k, v in raw.items() if not (k in _EMPTY_WHEN_NULL and v is None)}


def _check_name_option(name: str) -> None:
    """``--name`` obeys the rule of the spec's ``name:`` (the same field validates it), but it
    has no line: its problem names the option."""
    problems = _section(Spec, {"name": name}, (), only=("name",))
    if problems:
        problem = problems[0]
        raise SpecError([Problem(("--name",), problem.message, name, problem.expected).format(None)])


def collect_problems(raw: Any, name: str | None = None) -> list[Problem]:
    if not isinstance(raw, dict):
        return [Problem((), "a spec is a mapping of keys", raw, ["keys: " + ", ".join(TOP_LEVEL)])]
    problems = [
        Problem((key,), "unknown key", key, did_you_mean(key, list(TOP_LEVEL)))
        for key in raw
        if key not in TOP_LEVEL
    ]
    if name is None and "name" in raw:
        problems += _section(Spec, {"name": raw["name"]}, (), only=("name",))
    problems += _objectives(raw)
    problems += _section(Budget, budget_without_share(raw.get("budget", {})), ("budget",))
    problems += _strategy(SAMPLERS, raw.get("sampler", {}), "sampler", raw)
    problems += _strategy(PRUNERS, raw.get("pruner", {}), "pruner", raw)
    from hpo.training.config import DataConfig, TrainConfig

    problems += _section(DataConfig, raw.get("data", {}), ("data",))
    problems += _section(TrainConfig, raw.get("train", {}), ("train",))
    model_problems, families = _model(raw)
    problems += model_problems
    search_problems = _search(raw, families)
    problems += search_problems
    if not search_problems:  # a share or unique sampling needs the space's size
        problems += finite_problems(raw, families)
    problems += _enqueue(raw, families)
    return problems


def _section(cls: type[BaseModel], raw: Any, prefix: tuple, only: tuple = ()) -> list[Problem]:
    try:
        cls.model_validate(raw, strict=True)
        return []
    except ValidationError as exc:
        found = from_validation_error(exc, raw, prefix, cls)
        return [p for p in found if not only or p.path[len(prefix):len(prefix) + 1] in [(o,) for o in only]]


def _objectives(raw: dict[str, Any]) -> list[Problem]:
    """One objective or a list; the first is reported every epoch and drives pruning."""
    section = raw.get("objective", {})
    at: KeyPath
    if not isinstance(section, list):
        problems = _section(Objective, section, ("objective",))
        first, at = section, ("objective", "metric")
    else:
        if not section:
            return [Problem(("objective",), "the list of objectives is empty", expected=["at least one {metric: ...}"])]
        problems = [p for i, item in enumerate(section) for p in _section(Objective, item, ("objective", i))]
        metrics = [item.get("metric") for item in section if isinstance(item, dict)]
        for i, metric in enumerate(metrics):
            if metric in metrics[:i]:
                problems.append(Problem(("objective", i, "metric"), "metric listed twice", metric))
        first, at = section[0], ("objective", 0, "metric")
        pruner = _mapping(raw.get("pruner"))
        if pruner.get("name") == "hyperband":
            problems.append(Problem(("pruner", "name"), "Optuna's hyperband cannot prune a multi-objective study",
                                    "hyperband", ["median, successive_halving or none"]))
    metric = first.get("metric", "val_accuracy") if isinstance(first, dict) else None
    if metric in TRIAL_METRICS:
        problems.append(Problem(at, "the first objective must be a metric reported every epoch", metric,
                                ["one of: " + ", ".join(EPOCH_METRICS) + " (list further metrics after it)"]))
    return problems


def _strategy(registry: Registry, raw: Any, key: str, spec_raw: dict[str, Any]) -> list[Problem]:
    if not isinstance(raw, dict):
        return [Problem((key,), "wrong type", raw, ["a mapping such as {name: " + registry.names()[0] + "}"])]
    name = raw.get("name", "tpe" if key == "sampler" else default_pruner(spec_raw))
    if name not in registry:
        return [Problem((key, "name"), f"unknown {registry.kind}", name, did_you_mean(name, registry.names()))]
    return _section(registry.get(name).options, {**raw, "name": name}, (key,))


def _model(raw: dict[str, Any]) -> tuple[list[Problem], list[str]]:
    """Problems under ``model``, and the model families a trial may use."""
    from hpo.models.registry import MODELS

    section = raw.get("model")
    if section is None:
        expected = ["a mapping with name: " + " | ".join(MODELS.names())]
        return [Problem(("model",), "required key is missing", expected=expected)], []
    if not isinstance(section, dict):
        return [Problem(("model",), "wrong type", section, ["a mapping"])], []
    if "name" not in section:
        return [Problem(("model", "name"), "required key is missing", expected=did_you_mean("", MODELS.names()))], []
    name = section["name"]
    if name not in MODELS:
        return [Problem(("model", "name"), "unknown model", name, did_you_mean(name, MODELS.names()))], []
    families = [name]
    searched = (raw.get("search") or {}).get("model.name") if isinstance(raw.get("search"), dict) else None
    if isinstance(searched, dict) and isinstance(searched.get("choices"), list):
        # A searched family: model.* search keys may belong to any of the chosen families;
        # the fixed keys under model: stay those of the fixed family.
        families += [f for f in dict.fromkeys(searched["choices"]) if f in MODELS and f != name]
    return _section(MODELS.get(name).config, section, ("model",)), families


def _search(raw: dict[str, Any], families: list[str]) -> list[Problem]:
    search = raw.get("search", {})
    if search is None:
        return []
    if not isinstance(search, dict):
        return [Problem(("search",), "wrong type", search, ["a mapping of dotted paths to distributions"])]
    paths = ConfigPaths(raw, families)
    params: dict[str, SearchParam] = {}
    problems: list[Problem] = []
    for key, value in search.items():
        try:
            params[key] = SearchParam.model_validate(value, strict=True)
        except ValidationError as exc:
            problems += from_validation_error(exc, value, ("search", key), SearchParam)
            continue
        # Shape problems first: a bound that breaks a shape rule is reported once, for that.
        shape = _check_distribution(key, params[key])
        problems += shape + [p for p in _check_path(key, params[key], paths)
                             if p.path not in {q.path for q in shape}]
    for key, param in params.items():
        problems += _check_inside_searched(key, params)
        problems += _check_families(key, param, params, raw)
        problems += _check_when(key, param, params, paths)
        problems += _check_repeat(key, param, params, paths)
        if _is_grid(raw):
            problems += _check_grid(key, param)
    problems += _check_cycles(params)
    if _is_grid(raw) and params and all(p.choices for p in params.values()):
        problems += _check_grid_budget(raw, params)
    return problems


def _enqueue(raw: dict[str, Any], families: list[str]) -> list[Problem]:
    """``enqueue:`` sets against the searched parameters that are valid (the others are
    reported by ``_search``)."""
    from hpo.spec.enqueue import enqueue_problems

    search = _mapping(raw.get("search"))
    params = {}
    for key, value in search.items():
        try:
            params[key] = SearchParam.model_validate(value, strict=True)
        except ValidationError:
            continue
    problems = enqueue_problems(raw.get("enqueue"), params, ConfigPaths(raw, families))
    n_trials = _mapping(raw.get("budget")).get("n_trials", Budget.model_fields["n_trials"].default)
    sets = raw.get("enqueue")
    if isinstance(sets, list) and isinstance(n_trials, int) and len(sets) > n_trials:
        # The sets past n_trials would be handed back unrun (hpo.worker.budget).
        problems.append(Problem(("enqueue",), f"{len(sets)} sets, more than budget.n_trials", n_trials,
                                [f"at most {n_trials} sets, or a larger budget.n_trials"]))
    return problems


def _is_grid(raw: dict[str, Any]) -> bool:
    return isinstance(raw.get("sampler"), dict) and raw["sampler"].get("name") == "grid"


def _check_grid_budget(raw: dict[str, Any], params: dict[str, SearchParam]) -> list[Problem]:
    """More trials than grid points would repeat combinations."""
    size = 1
    for param in params.values():
        size *= len(param.choices or [])
    budget = _mapping(raw.get("budget"))
    n_trials = budget.get("n_trials", Budget.model_fields["n_trials"].default)
    if isinstance(n_trials, int) and n_trials > size:
        return [Problem(("budget", "n_trials") if "n_trials" in budget else ("sampler", "name"),
                        f"the grid has {size} combinations, fewer than budget.n_trials", n_trials,
                        [f"budget.n_trials <= {size}"])]
    return []


def _check_path(key: str, param: SearchParam, paths: ConfigPaths) -> list[Problem]:
    at = ("search", key)
    section = key.partition(".")[0]
    if section not in SECTIONS or "." not in key:
        return [Problem(at, "a search key is a dotted path into data, model or train", key,
                        ["a path such as train.lr or model.dropout"])]
    step = _step_path(key, paths)
    if step is not None:
        return _check_step_path(key, param, paths, *step)
    if not paths.exists(key):
        return [Problem(at, "unknown path", key, did_you_mean(key, paths.known()))]
    return _check_candidates(key, param, lambda value: paths.check(key, value))


def _check_candidates(key: str, param: SearchParam,
                      check: Callable[[Any], tuple[str, list[str]] | None]) -> list[Problem]:
    """Each choice (or bound) of ``param`` held to the rules of a fixed value at ``key``."""
    at = ("search", key)
    candidates = param.choices if param.choices is not None else [param.low, param.high]
    problems = []
    for index, value in enumerate(candidates):
        if value is None and param.choices is None:  # a missing bound: reported as its shape
            continue
        reason = check(value)
        if reason:
            where = at + (("choices", index) if param.choices is not None else ("low" if index == 0 else "high",))
            problems.append(Problem(where, f"not a valid value for {key}: {reason[0]}", value, reason[1]))
    return problems


def _step_path(key: str, paths: ConfigPaths) -> tuple[str, str, str] | None:
    """(list path, step name, step key) when ``key`` names one key of a step in a list of
    named steps, as ``data.augment.rotation.enabled`` does; else None."""
    head, _, rest = key.rpartition(".")
    prefix, _, name = head.rpartition(".")
    if not prefix or paths.exists(key) or not paths.exists(prefix):
        return None
    # A list of named steps: the name alone is a valid list there (a known step), or the
    # fixed list is one of named steps (and the name perhaps misspelt: said so, at the step).
    fixed = paths.fixed_value(prefix)
    named = isinstance(fixed, list) and bool(fixed) and all(isinstance(_step_name(s), str) for s in fixed)
    return (prefix, name, rest) if named or paths.check(prefix, [name]) is None else None


def _check_step_path(key: str, param: SearchParam, paths: ConfigPaths,
                     prefix: str, name: str, field: str) -> list[Problem]:
    """A searched key of one step: the step must be written, once, in the fixed list (a
    preset names no steps), and each value must make a list the fixed one would accept."""
    at = ("search", key)
    steps = paths.fixed_value(prefix)
    if not isinstance(steps, list):
        return [Problem(at, f"a step's key needs {prefix} written as a list of steps", key,
                        [f"{prefix}: [{name}, ...] (the steps in order)"])]
    names = [_step_name(step) for step in steps]
    if names.count(name) != 1:
        if name in names:
            return [Problem(at, f"{name} is more than one step of {prefix}", key,
                            [f"{name} written once in {prefix}"])]
        return [Problem(at, f"{name} is not a step of {prefix}", name, did_you_mean(name, names))]
    index = names.index(name)

    def check(value: Any) -> tuple[str, list[str]] | None:
        step = steps[index] if isinstance(steps[index], dict) else {"name": name}
        return paths.check(prefix, [*steps[:index], {**step, field: value}, *steps[index + 1:]])

    return _check_candidates(key, param, check)


def _check_families(key: str, param: SearchParam, params: dict[str, SearchParam],
                    raw: dict[str, Any]) -> list[Problem]:
    """With ``model.name`` searched, a ``model.*`` key is sampled into every family its
    ``when`` lets it meet: each of those must have the key and accept its values, or every
    trial of that family fails (``_check_path`` only asks that some family accepts them)."""
    from hpo.models.registry import MODELS

    name = params.get("model.name")
    if not key.startswith("model.") or key == "model.name" or name is None or not name.choices:
        return []
    wanted = (param.when or {}).get("model.name")
    allowed = wanted if isinstance(wanted, list) else [wanted] if wanted is not None else None
    families = [f for f in dict.fromkeys(map(str, name.choices)) if f in MODELS and (allowed is None or f in allowed)]
    each = {family: ConfigPaths(raw, [family]) for family in families}
    having = [family for family in families if each[family].exists(key)]
    at = ("search", key)
    problems = [Problem(at, f"not a key of model family {family}, which model.name may choose",
                        expected=[f"when: {{model.name: {_yaml_names(having)}}}"])
                for family in families if family not in having and having]
    candidates = param.choices if param.choices is not None else [param.low, param.high]
    for index, value in enumerate(candidates):
        where = at + (("choices", index) if param.choices is not None else ("low" if index == 0 else "high",))
        reasons = {family: each[family].check(key, value) for family in having if value is not None}
        refusing = [family for family, reason in reasons.items() if reason]
        if refusing and len(refusing) < len(reasons):  # refused by all: _check_path reports it
            reason = reasons[refusing[0]]
            assert reason is not None
            problems.append(Problem(where, f"not valid for model family {refusing[0]}, which model.name "
                                    f"may choose: {reason[0]}", value,
                                    ["values every searched family takes, or one spec per family"]))
    return problems


def _yaml_names(names: list[str]) -> str:
    return names[0] if len(names) == 1 else "[" + ", ".join(names) + "]"


def _check_inside_searched(key: str, params: dict[str, SearchParam]) -> list[Problem]:
    """``data.augment.rotation.enabled`` changes a step of the fixed ``data.augment``; with
    ``data.augment`` searched too, the sampled list may not have that step."""
    outer = [other for other in params if key.startswith(other + ".")]
    return [Problem(("search", key), f"{outer[0]} is searched too, so {key} may name nothing", key,
                    [f"search {outer[0]} or {key}, not both"])] if outer else []


def _step_name(step: Any) -> Any:
    return step.get("name") if isinstance(step, dict) else step


def _check_distribution(key: str, p: SearchParam) -> list[Problem]:
    at = ("search", key)
    if p.choices is not None:
        problems = []
        if any(v is not None for v in (p.low, p.high, p.step)) or p.log:
            problems.append(Problem(at, "give either choices or low/high, not both"))
        if not p.choices:
            problems.append(Problem(at + ("choices",), "choices is empty", expected=["at least one value"]))
        elif len({repr(label) for label in p.labels()}) != len(p.choices):  # [] is none
            problems.append(Problem(at + ("choices",), "choices repeat a value", p.choices))
        if p.type in ("int", "float"):
            problems.append(Problem(at + ("type",), f"type {p.type} needs low and high, not choices", p.type))
        return problems
    missing = [bound for bound in ("low", "high") if getattr(p, bound) is None]
    if missing:
        return [Problem(at + (bound,), "required key is missing", expected=["a number (or give choices instead)"])
                for bound in missing]
    if p.type == "categorical":
        return [Problem(at + ("type",), "type categorical needs choices", p.type)]
    problems = []
    if p.low > p.high:  # type: ignore[operator]
        problems.append(Problem(at + ("low",), "low is greater than high", p.low, [f"a value <= high ({p.high})"]))
    if p.log and p.low <= 0:  # type: ignore[operator]
        problems.append(Problem(at + ("low",), "a log scale needs low > 0", p.low, ["a value > 0"]))
    if p.log and p.step is not None:
        problems.append(Problem(at + ("step",), "step cannot be combined with log: true", p.step))
    if p.step is not None and p.step <= 0:
        problems.append(Problem(at + ("step",), "out of range", p.step, ["a value > 0"]))
    if p.kind() == "int":
        for bound in ("low", "high", "step"):
            value = getattr(p, bound)
            if value is not None and float(value) != int(value):
                problems.append(Problem(at + (bound,), "an int distribution needs whole numbers", value))
    return problems


def _possible(path: str, params: dict[str, SearchParam], paths: ConfigPaths) -> tuple[str, Any] | None:
    """How the value at ``path`` is decided: ("choices", [...]), ("range", p) or ("fixed", v)."""
    if path in params:
        p = params[path]
        return ("choices", p.labels()) if p.choices is not None else ("range", p)
    if paths.exists(path):
        return "fixed", paths.fixed_value(path)
    return None


def _check_when(key: str, param: SearchParam, params: dict[str, SearchParam], paths: ConfigPaths) -> list[Problem]:
    problems = []
    for path, accepted in param.condition().items():
        at = ("search", key, "when", path)
        if path == key:
            problems.append(Problem(at, "a parameter cannot depend on itself", path))
            continue
        how = _possible(path, params, paths)
        if how is None:
            known = sorted(set(params) | set(paths.known()))
            problems.append(Problem(at, "unknown path in when", path, did_you_mean(path, known)))
            continue
        if path in params and params[path].repeat:
            problems.append(Problem(at, "a condition cannot name a repeated parameter", path))
            continue
        if how[0] == "fixed":  # as sampling sees it: defaults filled in (a step's p)
            how = ("fixed", paths.sampled_value(path))
        problems += _impossible_values(at, path, how, accepted)
    return problems


def _impossible_values(at: KeyPath, path: str, how: tuple[str, Any], accepted: list[Any]) -> list[Problem]:
    """A ``when`` condition's values that ``path`` can never take. Values are compared by
    their labels, as sampling compares them (hpo.spec.space and hpo.spec.finite): a list
    value, such as a fixed list of augmentation steps, is named by its label (``[hflip]``,
    defaults filled in, is ``hflip(p=0.5)``)."""
    kind, what = how
    if kind == "fixed":
        what = choice_label(what)
    accepted = [choice_label(value) for value in accepted]
    problems = []
    for value in accepted:
        if kind == "choices" and value not in what:
            problems.append(Problem(at, f"impossible value: {path} is searched over other values", value,
                                    ["one of: " + ", ".join(map(str, what))]))
        elif kind == "range" and not (isinstance(value, int | float) and not isinstance(value, bool)
                                      and what.low <= value <= what.high):
            problems.append(Problem(at, f"impossible value: {path} is searched in [{what.low}, {what.high}]", value,
                                    [f"a number in [{what.low}, {what.high}]"]))
    if kind == "fixed" and what not in accepted:
        problems.append(Problem(at, f"never true: {path} is fixed to {what!r} and not searched",
                                accepted if len(accepted) > 1 else accepted[0], [repr(what)]))
    return problems


def _check_repeat(key: str, param: SearchParam, params: dict[str, SearchParam], paths: ConfigPaths) -> list[Problem]:
    target = param.repeat
    if target is None:
        return []
    at = ("search", key, "repeat")
    how = _possible(target, params, paths)
    if how is None:
        known = sorted(set(params) | set(paths.known()))
        return [Problem(at, "unknown path in repeat", target, did_you_mean(target, known))]
    kind, what = how
    is_int = (
        (kind == "range" and what.kind() == "int")
        or (kind == "choices" and all(isinstance(c, int) and not isinstance(c, bool) for c in what))
        or (kind == "fixed" and isinstance(what, int) and not isinstance(what, bool))
    )
    problems = []
    if not is_int or (target in params and params[target].repeat):
        problems.append(Problem(at, f"repeat needs an integer count, and {target} is not one", target,
                                ["an integer path such as model.n_blocks"]))
    if paths.exists(key) and not paths.accepts_list(key):
        problems.append(Problem(at, f"{key} takes a single value, so it cannot be repeated", target))
    if not problems and paths.exists(key):
        problems += _check_repeat_fills(key, param, target, how, paths)
    return problems


def _check_repeat_fills(key: str, param: SearchParam, target: str, how: tuple[str, Any],
                        paths: ConfigPaths) -> list[Problem]:
    """The sampled list must be one ``key`` accepts at every count, under the rules a fixed
    list meets (``filters`` needs ``n_blocks`` values): the count's extremes are tried."""
    at = ("search", key, "repeat")
    low, high = _repeat_counts(how)
    if high > MAX_REPEAT:
        return [Problem(at, f"{target} can be {high}, too many values to sample", target,
                        [f"a count of at most {MAX_REPEAT}"])]
    sample = param.low if param.choices is None else param.choices[0]
    for count in dict.fromkeys((low, high)):
        reason = paths.check(key, [sample] * max(count, 0), also={target: count})
        if reason:
            return [Problem(at, f"with {target} = {count}, {reason[0]}", target, reason[1])]
    return []


def _repeat_counts(how: tuple[str, Any]) -> tuple[int, int]:
    """The smallest and largest count a repeat can get (``how`` as from ``_possible``)."""
    kind, what = how
    if kind == "range":
        return int(what.low), int(what.high)
    if kind == "choices":
        return min(what), max(what)
    return what, what


def _check_grid(key: str, param: SearchParam) -> list[Problem]:
    """The grid is the product of fixed lists: no ranges, and no parameters that come and go."""
    at = ("search", key)
    if param.choices is None:
        return [Problem(at, "the grid sampler cannot take a range: give choices: [...]", key,
                        [f"e.g. choices: {_example_choices(param)}, or another sampler"])]
    if param.when or param.repeat:
        return [Problem(at, "the grid sampler cannot use when or repeat", key)]
    return []


def _example_choices(param: SearchParam) -> str:
    """A few values of a range to suggest as choices: its powers of ten when it spans at
    least two of them (as a learning rate or weight decay does), else its ends and middle."""
    low, high = float(param.low or 0), float(param.high or 0)
    values: list[float] = []
    if low > 0 and high >= 100 * low:
        values = [10.0 ** k for k in range(math.ceil(math.log10(low) - 1e-9), math.floor(math.log10(high) + 1e-9) + 1)]
    if len(values) < 3:
        values = [low, (low + high) / 2, high]
    if param.kind() == "int":
        return "[" + ", ".join(str(v) for v in dict.fromkeys(round(v) for v in values)) + "]"
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"


def _check_cycles(params: dict[str, SearchParam]) -> list[Problem]:
    sorter = graphlib.TopologicalSorter({key: dependencies(p, params) for key, p in params.items()})
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        cycle = exc.args[1]
        return [Problem(("search", cycle[0]), "when/repeat conditions form a cycle", " -> ".join(cycle))]
    return []


def dependencies(param: SearchParam, params: dict[str, SearchParam]) -> set[str]:
    """Searched parameters that must be sampled before this one."""
    needed = set(param.condition())
    if param.repeat:
        needed.add(param.repeat)
    return {path for path in needed if path in params}


def _mapping(section: Any) -> dict[str, Any]:
    """A section as written when it is a mapping, else empty (its own check reports it)."""
    return section if isinstance(section, dict) else {}
