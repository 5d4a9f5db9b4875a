"""The spec rules of finite search spaces: ``sampler.unique`` and ``budget.n_trials: 20%``.

Both need the space's size (``hpo.spec.finite``), so both are checked once the rest of the
search space is valid; a share is then resolved to a number of trials before the Spec is
built, so that the stored spec, every worker and ``hpo study show`` read one count.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from hpo.spec.finite import (
    MAX_UNIQUE_CONFIGURATIONS,
    count_configurations,
    infinite_keys,
    parse_share,
    trials_for_share,
)
from hpo.spec.model import Budget, SearchParam
from hpo.spec.paths import ConfigPaths
from hpo.spec.problems import Problem

AT = ("budget", "n_trials")


def budget_without_share(budget: Any) -> Any:
    """``budget`` with a share in n_trials replaced by a count, for the Budget model's checks
    (the share's own are ``finite_problems``')."""
    if isinstance(budget, dict) and parse_share(budget.get("n_trials")) is not None:
        return {**budget, "n_trials": 1}
    return budget


def finite_problems(raw: dict[str, Any], families: list[str]) -> list[Problem]:
    """What is wrong with a share or with unique random sampling in this (otherwise valid)
    search space."""
    share = parse_share(_mapping(raw.get("budget")).get("n_trials"))
    unique = _mapping(raw.get("sampler")).get("name") == "random" and _mapping(raw.get("sampler")).get("unique")
    if share is None and not unique:
        return []
    params, paths = _params(raw), ConfigPaths(raw, families)
    infinite = infinite_keys(params)
    problems = _share_problems(share, infinite) if share is not None else []
    if unique:
        problems += [Problem(("search", key), "sampler.unique needs a finite search space, and a float "
                             "range without a step has endless values", key, ["choices: [...] or a step"])
                     for key in infinite]
    if unique and not infinite:
        problems += _unique_size_problems(raw, count_configurations(params, paths.fixed_value), share)
    return problems


def resolve_share(raw: dict[str, Any], families: list[str]) -> dict[str, Any]:
    """``raw`` with a share in budget.n_trials replaced by its count of trials (a valid spec)."""
    budget = _mapping(raw.get("budget"))
    share = parse_share(budget.get("n_trials"))
    if share is None:
        return raw
    size = count_configurations(_params(raw), ConfigPaths(raw, families).fixed_value)
    return {**raw, "budget": {**budget, "n_trials": trials_for_share(share, size)}}


def _share_problems(share: float, infinite: list[str]) -> list[Problem]:
    value = f"{share:g}%"
    if not 0 < share <= 100:
        return [Problem(AT, "a share of the search space is above 0% and at most 100%", value,
                        ["a share such as 20%, or a number of trials"])]
    if infinite:
        return [Problem(AT, f"a share needs a finite search space, and {infinite[0]} is a float range "
                        "without a step", value, [f"a number of trials, or choices or a step for {infinite[0]}"])]
    return []


def _unique_size_problems(raw: dict[str, Any], size: int, share: float | None) -> list[Problem]:
    if size > MAX_UNIQUE_CONFIGURATIONS:
        return [Problem(("sampler", "unique"), f"the search space has {size} configurations, more than "
                        f"unique random sampling keeps track of ({MAX_UNIQUE_CONFIGURATIONS})", True,
                        ["unique: false (in a space this large repeats are rare), or fewer values"])]
    budget = _mapping(raw.get("budget"))
    n_trials = budget.get("n_trials", Budget.model_fields["n_trials"].default)
    if share is None and isinstance(n_trials, int) and n_trials > size:
        return [Problem(AT if "n_trials" in budget else ("sampler", "unique"),
                        f"the search space has {size} configurations, fewer than budget.n_trials", n_trials,
                        [f"budget.n_trials <= {size} (or 100%), or unique: false"])]
    return []


def _params(raw: dict[str, Any]) -> dict[str, SearchParam]:
    params = {}
    for key, value in _mapping(raw.get("search")).items():
        try:
            params[key] = SearchParam.model_validate(value, strict=True)
        except ValidationError:
            continue  # reported with the search section
    return params


def _mapping(section: Any) -> dict[str, Any]:
    return section if isinstance(section, dict) else {}
