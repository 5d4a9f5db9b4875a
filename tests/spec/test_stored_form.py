"""A spec written before a key existed stores the same JSON (and so the same sha256) today.

`hpo study create --if-exists reuse` compares the stored hash; a new field with a default
must therefore be left out of the stored form at its default (hpo.spec.ADDED_LATER), or every
study created before it would be refused as "a different spec". The YAML files in stored/
are example specs as they were on 2026-12-02 (and a random-sampler patch_mlp spec), and
stored_json.json their stored form then, written by that day's code.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpo.spec import load_spec, spec_sha256, spec_to_json

STORED = Path(__file__).parent / "stored"
BEFORE = json.loads((STORED / "stored_json.json").read_text())


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_a_spec_from_before_stores_what_it_stored_then(name):
    today = spec_to_json(load_spec(STORED / f"{name}.yaml"))
    added = {f"{section}.{key}" for section, values in today.items() if isinstance(values, dict)
             for key in values if key not in BEFORE[name].get(section, {})}
    assert not added, f"new keys in the stored form (add them to hpo.spec.ADDED_LATER): {sorted(added)}"
    assert spec_sha256(today) == spec_sha256(BEFORE[name])


@pytest.mark.parametrize("name", sorted(n for n in BEFORE if BEFORE[n]["pruner"]["name"] == "hyperband"))
def test_a_study_created_before_the_default_changed_keeps_its_hyperband(tmp_path, name):
    """Its stored JSON holds the pruner explicitly, so its workers keep building Hyperband
    now that a spec naming no pruner gets successive halving."""
    import optuna

    from hpo.spec.space import max_epochs
    from hpo.spec.strategies import build_pruner
    from hpo.storage.urls import open_storage, resolve_storage
    from hpo.study.attrs import SPEC, SPEC_SHA256
    from hpo.study.studies import load_study

    target = resolve_storage(str(tmp_path / "before.journal"))
    created = optuna.create_study(study_name=name, storage=open_storage(target))  # as create_study did then
    created.set_user_attr(SPEC, BEFORE[name])
    created.set_user_attr(SPEC_SHA256, spec_sha256(BEFORE[name]))
    spec = load_study(name, target).spec
    assert spec.pruner.model_dump() == BEFORE[name]["pruner"]
    pruner = build_pruner(spec.pruner, max_epochs=max_epochs(spec))
    assert isinstance(pruner, optuna.pruners.HyperbandPruner)
    assert (pruner._min_resource, pruner._max_resource, pruner._reduction_factor) == (
        1, BEFORE[name]["pruner"]["max_resource"], 3)
