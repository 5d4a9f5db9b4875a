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
