"""The spec's JSON Schema, generated from the validation models.

Committed as ``search_spaces/spec.schema.json`` (a test keeps it current) and referenced
from every example spec, so that editors complete and check keys.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hpo.spec.model import Spec

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "search_spaces" / "spec.schema.json"


def spec_json_schema() -> dict[str, Any]:
    schema = Spec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    # Search keys are dotted paths into data, model and train.
    schema["properties"]["search"]["propertyNames"] = {"pattern": r"^(data|model|train)\.[A-Za-z_][A-Za-z0-9_.]*$"}
    return schema


def render_schema() -> str:
    return json.dumps(spec_json_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":  # python -m hpo.spec.schema  rewrites the committed file
    SCHEMA_PATH.write_text(render_schema(), encoding="utf-8")
    print(f"wrote {SCHEMA_PATH}")
