"""YAML spec -> validated, frozen Spec. Errors name file:line, key path, value and fix."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from hpo.spec.model import SearchParam, Spec
from hpo.spec.yaml_source import read_yaml


def load_spec(path: str | Path, *, name: str | None = None) -> Spec:
    """Read and validate a spec file; ``name`` (from ``--name``) overrides the file's."""
    from hpo.spec.validate import validate_source

    return validate_source(read_yaml(path), name=name)


def spec_from_json(data: dict[str, Any]) -> Spec:
    """Rebuild a spec stored in a study (already validated when it was created)."""
    return Spec.model_validate(data)


def spec_to_json(spec: Spec) -> dict[str, Any]:
    return spec.model_dump(mode="json")


def spec_sha256(data: dict[str, Any]) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


__all__ = ["SearchParam", "Spec", "load_spec", "spec_from_json", "spec_sha256", "spec_to_json"]
