"""YAML spec -> validated, frozen Spec. Errors name file:line, key path, value and fix."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo.spec.model import SearchParam, Spec
from hpo.spec.yaml_source import read_yaml

if TYPE_CHECKING:
    from hpo.spec.overrides import Overrides


def load_spec(path: str | Path, *, name: str | None = None, overrides: Overrides = ()) -> Spec:
    """Read and validate a spec file; ``name`` (from ``--name``) overrides the file's.

    ``overrides``: values put over the file's before validation, as ``--set`` gives them
    (``["train.lr=0.01", "budget.n_trials=20"]``, values read as YAML) or as a mapping of
    dotted keys to Python values (``{"train.lr": 0.01}``); see hpo.spec.overrides."""
    from hpo.spec.overrides import apply_overrides
    from hpo.spec.validate import validate_source

    return validate_source(apply_overrides(read_yaml(path), overrides), name=name)


def spec_from_json(data: dict[str, Any]) -> Spec:
    """Rebuild a spec stored in a study (already validated when it was created)."""
    return Spec.model_validate(data)


# Keys added to the spec after studies were stored with it, by section. While one holds its
# default it is left out of the stored JSON, and so of its sha256: `hpo study create
# --if-exists reuse` of an unchanged spec still matches a study created before the key
# existed, and reading that study back fills in the default.
ADDED_LATER: dict[str, tuple[str, ...]] = {
    "budget": ("max_consecutive_failures",),
    "data": ("val_per_class", "test_per_class"),
    "model": ("init_range",),  # every family has it (hpo.models.registry.ModelConfig)
    "train": ("record_gradients",),
    "sampler": ("unique",),  # random's only
}
# The same for keys of one model family (squeezenet's residual is older than patch_mlp's).
ADDED_LATER_IN_FAMILY: dict[str, tuple[str, ...]] = {"patch_mlp": ("norm", "residual")}


# Top-level keys added later, left out of the stored JSON while empty for the same reason.
ADDED_LATER_TOP = ("enqueue",)


def spec_to_json(spec: Spec) -> dict[str, Any]:
    data = spec.model_dump(mode="json")
    for key in ADDED_LATER_TOP:
        if not data.get(key):
            data.pop(key, None)
    for section, keys in ADDED_LATER.items():
        fields = type(getattr(spec, section)).model_fields
        if section == "model":
            keys += ADDED_LATER_IN_FAMILY.get(spec.model.name, ())
        for key in keys:
            if key in fields and data[section].get(key) == fields[key].get_default(call_default_factory=True):
                del data[section][key]
    return data


def spec_sha256(data: dict[str, Any]) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


__all__ = ["SearchParam", "Spec", "load_spec", "spec_from_json", "spec_sha256", "spec_to_json"]
