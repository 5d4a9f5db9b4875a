"""``hpo study export``: one row per trial, as CSV, JSON or Parquet, through pandas.

The frame is built from the frozen trials rather than ``study.trials_dataframe()``: that
one nests user attributes as whole dicts (``user_attrs_config``), names multi-objective
columns after Optuna's conventions, and cannot leave out hpo's unrun hand-backs; building
the rows here keeps the columns the same for one and several objectives.

The names follow Optuna's frame where both have a column: hyperparameters are
``params_<name>``, so ``df.filter(like="params_")`` picks exactly them, and the parameter
counts (``params_total`` in the trial record) are ``total_params``/``trainable_params`` here
(``n_params_total`` would still contain ``params_``). The trial record's own keys stay as
they are: only this frame is renamed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo.errors import UsageError
from hpo.results.outputs import check_output_file
from hpo.study.attrs import (
    DATA_REPORT,
    DEVICE,
    EPOCHS_TRAINED,
    FAIL_REASON,
    IMAGES_PER_SECOND,
    OVER_BUDGET,
    PARAMS_TOTAL,
    PARAMS_TRAINABLE,
    PEAK_MEMORY_MB,
    PRUNED_AT_EPOCH,
    SECONDS_PER_EPOCH,
    SEED,
    STOPPED_EARLY,
    TrialRecord,
)
from hpo.study.studies import LoadedStudy, visible_trials

if TYPE_CHECKING:
    import pandas as pd
    from optuna import Study

FORMATS = (".csv", ".json", ".parquet")
PARAM_PREFIX = "params_"  # Optuna's trials_dataframe() prefix for hyperparameters
# Trial attributes whose names would read as hyperparameters in the frame.
RENAMED = {PARAMS_TOTAL: "total_params", PARAMS_TRAINABLE: "trainable_params"}
# The data report's unreadable files ({path: why}): one column holding the list of paths,
# not one column per path (the reasons are in the trial record and the worker's log).
SKIPPED_FILES = f"{DATA_REPORT}.skipped_files"
# What a user compares first; every other user attribute follows in name order.
LEADING_ATTRS = (
    RENAMED[PARAMS_TOTAL], RENAMED[PARAMS_TRAINABLE], PEAK_MEMORY_MB, SECONDS_PER_EPOCH,
    IMAGES_PER_SECOND, EPOCHS_TRAINED, PRUNED_AT_EPOCH, STOPPED_EARLY, FAIL_REASON, SEED, DEVICE,
)


def export_format(path: Path) -> str:
    """The format named by ``path``'s suffix; checked before the study is opened."""
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        shown = repr(suffix) if suffix else "no suffix"
        raise UsageError(f"cannot export to {path}: unknown format {shown} (expected .csv, .json or .parquet)")
    return suffix


def flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    """Nested dicts become dotted columns (``config.train.lr``); lists stay whole."""
    if isinstance(value, dict):
        for key, inner in value.items():
            flatten(inner, f"{prefix}.{key}" if prefix else str(key), out)
    else:
        out[prefix] = value


def trial_row(trial: TrialRecord, n_objectives: int) -> dict[str, Any]:
    row: dict[str, Any] = {"number": trial.number, "state": trial.state_name}
    if n_objectives == 1:
        row["value"] = trial.value
    else:
        values: Sequence[float | None] = trial.values or [None] * n_objectives
        row.update({f"value_{i}": v for i, v in enumerate(values)})
    row["datetime_start"] = trial.datetime_start
    row["datetime_complete"] = trial.datetime_complete
    duration = trial.duration
    row["duration_s"] = duration.total_seconds() if duration is not None else None
    row.update({f"{PARAM_PREFIX}{name}": value for name, value in trial.params.items()})
    row.update(_attr_columns(trial.user_attrs))
    return row


def _attr_columns(user_attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The user attributes flattened, the counts renamed, the skipped files as one list."""
    attrs = {RENAMED.get(k, k): v for k, v in user_attrs.items() if k != OVER_BUDGET}
    data = attrs.get(DATA_REPORT)
    if isinstance(data, dict) and isinstance(data.get("skipped_examples"), dict):
        data = dict(data)
        attrs[DATA_REPORT] = data
        skipped = data.pop("skipped_examples")
        attrs[SKIPPED_FILES] = list(skipped)
    out: dict[str, Any] = {}
    flatten(attrs, "", out)
    return out


def _column_order(columns: list[str], n_objectives: int) -> list[str]:
    values = ["value"] if n_objectives == 1 else [f"value_{i}" for i in range(n_objectives)]
    head = ["number", "state", *values, "datetime_start", "datetime_complete", "duration_s"]
    params = sorted(c for c in columns if c.startswith(PARAM_PREFIX))
    leading = [c for c in LEADING_ATTRS if c in columns]
    taken = set(head) | set(params) | set(leading)
    return head + params + leading + sorted(c for c in columns if c not in taken)


def trials_frame(study: Study) -> pd.DataFrame:
    """One row per trial (hand-backs left out), user attributes flattened into columns."""
    import pandas as pd

    n_objectives = len(study.directions)
    trials = visible_trials(study.get_trials(deepcopy=False))
    rows = [trial_row(TrialRecord.from_frozen(t), n_objectives) for t in trials]
    frame = pd.DataFrame(rows)
    columns = list(frame.columns) if rows else []
    frame = frame.reindex(columns=_column_order(columns, n_objectives))
    for column, dtype in _nullable_dtypes(rows).items():
        frame[column] = pd.Series([row.get(column) for row in rows], index=frame.index, dtype=dtype)
    for column in ("datetime_start", "datetime_complete"):
        frame[column] = pd.to_datetime(frame[column])
    return frame


def _nullable_dtypes(rows: list[dict[str, Any]]) -> dict[str, str]:
    """Integer and boolean columns with a cell missing (a repeated parameter a shallower
    trial has not, a failed trial's counts): pandas' nullable "Int64"/"boolean", which keep
    the kind where pandas' own inference turns them into floats or objects. Decided from
    the Python values, before any float conversion could round a large integer."""
    kinds: dict[str, set[type]] = {}
    for row in rows:
        for column, value in row.items():
            if value is not None:
                kinds.setdefault(column, set()).add(type(value))
    dtypes = {}
    for column, types in kinds.items():
        if all(column in row and row[column] is not None for row in rows):
            continue  # nothing missing: pandas' int64/bool already
        if types == {bool}:
            dtypes[column] = "boolean"
        elif types == {int}:
            dtypes[column] = "Int64"
    return dtypes


def _is_nested(value: Any) -> bool:
    return isinstance(value, (list, tuple, dict))


def _as_json_strings(frame: Any, columns: list[str]) -> Any:
    frame = frame.copy()
    for column in columns:
        frame[column] = frame[column].map(lambda v: json.dumps(v) if _is_nested(v) else v)
    return frame


def _nested_columns(frame: Any) -> list[str]:
    return [c for c in frame.columns if frame[c].dtype == object and frame[c].map(_is_nested).any()]


def _parquet_ready(frame: Any) -> Any:
    """Parquet keeps lists as lists where pyarrow can type the column; a column that mixes
    kinds (a list in one trial, a number in another) is written as JSON strings instead."""
    import pyarrow as pa

    mixed = []
    for column in frame.columns:
        if frame[column].dtype != object:
            continue
        try:
            pa.array(frame[column], from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            mixed.append(column)
    frame = _as_json_strings(frame, mixed)
    for column in mixed:  # still mixed scalars (numbers and strings): text it is
        frame[column] = frame[column].map(lambda v: v if v is None or isinstance(v, str) else str(v))
    return frame


def _records(frame: Any) -> list[dict[str, Any]]:
    """Rows with missing cells as null; json.dumps keeps every float digit (pandas' to_json
    rounds to 10 significant digits by default, so a learning rate would not read back equal)."""
    plain = frame.astype(object).where(frame.notna(), None)
    return plain.to_dict(orient="records")


def _json_default(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def write_frame(frame: Any, path: Path) -> None:
    suffix = export_format(path)
    check_output_file(path)
    if suffix == ".csv":
        _as_json_strings(frame, _nested_columns(frame)).to_csv(path, index=False)
    elif suffix == ".json":
        path.write_text(json.dumps(_records(frame), indent=2, default=_json_default) + "\n")
    else:
        _parquet_ready(frame).to_parquet(path, index=False)


def export_study(loaded: LoadedStudy, path: Path) -> int:
    """Write the study's trials to ``path`` (format by suffix); returns the row count."""
    check_output_file(path)
    export_format(path)
    frame = trials_frame(loaded.study)
    write_frame(frame, path)
    return len(frame)
