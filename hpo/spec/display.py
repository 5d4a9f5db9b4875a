"""How spec errors show key paths and values: ``search.train.lr.choices[1]``, ``.inf``.

Shared by the YAML reader and the validator, so that both kinds of problem read alike.
"""

from __future__ import annotations

import json
import math
from typing import Any

KeyPath = tuple[Any, ...]


def dotted(path: KeyPath) -> str:
    """``("search", "train.lr", "choices", 1)`` -> ``search.train.lr.choices[1]``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def show(value: Any) -> str:
    """A value as the user wrote it, shortened: strings quoted, numbers and lists as JSON,
    non-finite floats in YAML's spelling (``.inf``, ``-.inf``, ``.nan``)."""
    if isinstance(value, str):
        text = repr(value)
    elif isinstance(value, float) and not math.isfinite(value):
        text = ".nan" if math.isnan(value) else ("-.inf" if value < 0 else ".inf")
    else:
        try:
            text = json.dumps(value, default=str)
        except (TypeError, ValueError):
            text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
