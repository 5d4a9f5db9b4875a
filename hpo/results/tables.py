"""The report's tables as a paper prints them: the model comparison and a grid study's grid.

A table holds raw values and, per column, how a page shows them: readable headers (``lr``,
``batch size``, not ``train.batch_size``), one column per hyperparameter (a repeated one,
``model.filters[0..2]``, as one ``filters`` column reading ``32/64/128``), counts with
thousands separators, fixed decimals per measurement so that the points line up, numbers
right-aligned. The same table goes to the page (formatted), to ``NAME.md`` (formatted, with
Markdown's ``---:`` alignment) and to ``NAME.csv`` (raw numbers, for a spreadsheet or pandas).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo.results.text import fmt_count, fmt_fixed, fmt_mean_std, fmt_value, seeds_std
from hpo.study.attrs import TrialRecord

if TYPE_CHECKING:
    from hpo.spec.model import Spec

#: Hyperparameter names as a paper writes them, where the key's own name is not enough.
READABLE = {"lr": "lr", "batch_size": "batch size", "n_layers": "layers", "n_blocks": "blocks"}
#: Shown in a hyperparameter cell of a trial that did not set that (conditional) parameter.
NOT_SET = "-"

_REPEATED = re.compile(r"^(?P<base>.+)\[(?P<index>\d+)\]$")


@dataclass(frozen=True)
class Column:
    """One column: its header, each row's raw value, and how a page shows that value."""

    header: str
    value: Callable[[Any], Any]  # a row (a TrialRecord, mostly) -> its raw value
    show: Callable[[Any], str] = fmt_value
    numeric: bool = True  # right-aligned on the page
    # Floats shown with the same decimals down the column, as many as its smallest value
    # needs (``column_format``); ``show`` is then for what is not a float.
    fixed: bool = False
    scientific: bool = False  # with ``fixed``: a column spanning a log range (lr) as 1.00e-04

    @property
    def align(self) -> str:
        return "right" if self.numeric else "left"


@dataclass(frozen=True)
class Table:
    columns: list[Column]
    rows: list[Any]  # what each column's ``value`` reads: TrialRecords, or a class's counts

    @property
    def header(self) -> list[str]:
        return [c.header for c in self.columns]

    @property
    def align(self) -> list[str]:
        return [c.align for c in self.columns]

    def raw(self) -> list[list[Any]]:
        return [[c.value(t) for c in self.columns] for t in self.rows]

    def formatted(self) -> list[list[str]]:
        columns = []
        for column in self.columns:
            values = [column.value(t) for t in self.rows]
            show = column_format(values, column.show, column.scientific) if column.fixed else column.show
            columns.append([show(v) for v in values])
        return [list(row) for row in zip(*columns)] if columns else []

    def markdown(self) -> str:
        """A GitHub-flavoured Markdown table, numbers right-aligned (``---:``)."""
        def line(cells: Sequence[str]) -> str:
            return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

        rule = "|" + "|".join("---:" if a == "right" else "---" for a in self.align) + "|"
        return "\n".join([line(self.header), rule, *(line(row) for row in self.formatted())]) + "\n"

    def frame(self) -> Any:
        """The raw values as a pandas DataFrame: numbers as numbers (counts as nullable
        integers), missing ones empty; a (mean, std) column as two, ``X`` and ``X std``."""
        import pandas as pd

        data: dict[str, Any] = {}
        for column in self.columns:
            values = [column.value(t) for t in self.rows]
            if any(isinstance(v, tuple) for v in values):
                data[column.header] = [v[0] if v else None for v in values]
                data[f"{column.header} std"] = [v[1] if v else None for v in values]
            elif values and all(_is_int(v) for v in values if v is not None):
                data[column.header] = pd.array(values, dtype="Int64")  # not 12.0 beside a gap
            else:
                data[column.header] = values
        return pd.DataFrame(data)

    def write(self, directory: Path, name: str) -> list[Path]:
        """``name.csv`` (raw values) and ``name.md`` (formatted) in ``directory``."""
        csv, md = directory / f"{name}.csv", directory / f"{name}.md"
        self.frame().to_csv(csv, index=False)
        md.write_text(self.markdown())
        return [csv, md]


# --- columns -----------------------------------------------------------------------------


def model_name(trial: TrialRecord) -> str:
    """The model family, with the architecture for backbones (``timm convnext_tiny``) and the
    class for a user's own module (``custom SEFireNet``)."""
    model = (trial.config or {}).get("model") or {}
    family = str(model.get("name") or "-")
    if model.get("arch"):
        return f"{family} {model['arch']}"
    if model.get("module"):
        return f"{family} {str(model['module']).rpartition(':')[2]}"
    return family


def readable(key: str) -> str:
    """``train.batch_size`` -> ``batch size``, ``model.filters`` -> ``filters``."""
    name = key.rpartition(".")[2]
    return READABLE.get(name, name.replace("_", " "))


def param_groups(trials: Sequence[TrialRecord]) -> dict[str, list[str]]:
    """Searched keys grouped per column, in the order the trials set them: a repeated
    parameter's ``key[i]`` under ``key``, every other key alone."""
    groups: dict[str, list[str]] = {}
    for trial in trials:
        for key in trial.params:
            match = _REPEATED.match(key)
            base = match["base"] if match else key
            members = groups.setdefault(base, [])
            if key not in members:
                members.append(key)
    for members in groups.values():
        members.sort(key=lambda k: int(m["index"]) if (m := _REPEATED.match(k)) else -1)
    return groups


def _headers(bases: Sequence[str]) -> dict[str, str]:
    """Readable headers, the full key where two would read the same (``model.dropout``
    beside ``data.dropout``)."""
    short = {base: readable(base) for base in bases}
    repeated = {h for h in short.values() if list(short.values()).count(h) > 1}
    return {base: base if h in repeated else h for base, h in short.items()}


def _param_value(members: Sequence[str]) -> Callable[[TrialRecord], Any]:
    def value(trial: TrialRecord) -> Any:
        present = [trial.params[k] for k in members if k in trial.params]
        if not present:
            return None
        if len(members) == 1 and not _REPEATED.match(members[0]):
            return present[0]
        return "/".join(fmt_value(v) for v in present)  # one value per block: 32/64/128
    return value


def _param_cell(value: Any) -> str:
    return NOT_SET if value is None else fmt_value(value)


def log_keys(spec: Spec) -> frozenset[str]:
    """The keys ``spec`` searches over a log range (``log: true``): the hyperparameter columns
    that may be written in scientific notation."""
    return frozenset(key for key, param in spec.search.items() if param.log)


def param_columns(trials: Sequence[TrialRecord], keys: Sequence[str] | None = None,
                  log: Collection[str] = ()) -> list[Column]:
    """One column per hyperparameter (``keys``: only these, in this order); ``log``: the keys
    searched over a log range (``log_keys``)."""
    groups = param_groups(trials)
    if keys is not None:
        groups = {k: groups[k] for k in keys if k in groups}
    headers = _headers(list(groups))
    columns = []
    for base, members in groups.items():
        numeric = all(_is_number(t.params[k]) for t in trials for k in members if k in t.params)
        columns.append(Column(headers[base], _param_value(members), _param_cell, numeric=numeric, fixed=True,
                              scientific=base in log))
    return columns


def column_format(values: Sequence[Any], other: Callable[[Any], str], scientific: bool = False) -> Callable[[Any], str]:
    """One format for a column's floats, so that their points line up: fixed decimals, 2 to
    4, enough for 2 significant digits of the smallest; with ``scientific`` (a hyperparameter
    searched over a log range: lr 1e-4 .. 1e-1), a column reaching below 0.01 in scientific
    notation with 2 decimals, as papers write such hyperparameters. What decides is the
    searched range, not the values' spread: a dropout of 0.004 beside 0.45 stays fixed
    (measurements too)."""
    import math

    floats = [abs(v) for v in values if isinstance(v, float) and math.isfinite(v) and v != 0]
    if not floats:
        return other
    if scientific and min(floats) < 0.01:
        return lambda v: f"{v:.2e}" if isinstance(v, float) else other(v)
    decimals = max(2, min(4, 1 - math.floor(math.log10(min(floats)))))
    return lambda v: fmt_fixed(v, decimals) if isinstance(v, float) else other(v)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def on_gpu(trial: TrialRecord) -> bool:
    return bool(trial.device) and str(trial.device).startswith("cuda")


def gpu_memory(trial: TrialRecord) -> float | None:
    """Peak GPU memory in MB; None on CPU, where the recorded peak is the worker process's
    resident set across all its trials, not this model's."""
    return trial.peak_memory_mb if on_gpu(trial) else None


def _accuracy_cell(value: Any) -> str:
    return fmt_fixed(value, 4)


def _test_cell(value: Any) -> str:
    return "-" if value is None else fmt_mean_std(value[0], value[1])


def _readable_metric(name: str) -> str:
    return name.replace("_", " ").replace("val ", "validation ", 1) if name.startswith("val_") else \
        name.replace("_", " ")


def measurement_columns(trials: Sequence[TrialRecord], objectives: Sequence[str],
                        retrains: Mapping[int, dict[str, Any]]) -> list[Column]:
    """The objectives, validation accuracy (when no objective is it), parameters, speed,
    memory and the retrained test accuracy (when a trial of the table was retrained with --test)."""
    columns = []
    for i, name in enumerate(objectives):
        show = _accuracy_cell if "accuracy" in name or "loss" in name else fmt_value
        columns.append(Column(_readable_metric(name), _objective(i), show))
    if "val_accuracy" not in objectives:
        columns.append(Column("validation accuracy", lambda t: t.best_val_accuracy, _accuracy_cell))
    columns += [
        Column("parameters", lambda t: t.params_total, fmt_count),
        Column("trainable", lambda t: t.params_trainable, fmt_count),
        Column("s/epoch", lambda t: t.seconds_per_epoch, fmt_value, fixed=True),
        Column("images/s", lambda t: t.images_per_second, lambda v: fmt_fixed(v, 0)),
        Column("epochs trained", lambda t: t.epochs_trained, fmt_count),
    ]
    columns.append(_memory_column())
    if any(_test_accuracy(retrains, t.number) is not None for t in trials):
        columns.append(Column("test accuracy", lambda t: _test_accuracy(retrains, t.number), _test_cell))
    return columns


def _objective(index: int) -> Callable[[TrialRecord], Any]:
    return lambda t: t.values[index] if t.values and len(t.values) > index else None


def _memory_column() -> Column:
    """Peak GPU memory: raw MB in the CSV (empty on CPU), ``n/a`` on CPU on the page."""
    return Column("peak GPU memory (MB)", gpu_memory,
                  show=lambda v: "n/a" if v is None else fmt_fixed(v, 1))


def _test_accuracy(retrains: Mapping[int, dict[str, Any]], number: int) -> tuple[float, float | None] | None:
    """(mean, std) over seeds of the latest ``hpo retrain --test`` of trial ``number``; std
    None for one seed (an empty CSV cell: no spread was measured)."""
    accuracy = ((retrains.get(number) or {}).get("test") or {}).get("accuracy")
    if not accuracy or accuracy.get("mean") is None:
        return None
    return float(accuracy["mean"]), seeds_std(accuracy)


# --- the tables --------------------------------------------------------------------------


def comparison_table(trials: Sequence[TrialRecord], objectives: Sequence[str],
                     retrains: Mapping[int, dict[str, Any]], log: Collection[str] = ()) -> Table:
    """The model comparison: trial, model, one column per hyperparameter (``log``: the keys
    searched over a log range), then what was measured."""
    columns = [Column("trial", lambda t: t.number, str),
               Column("model", model_name, str, numeric=False),
               *param_columns(trials, log=log),
               *measurement_columns(trials, objectives, retrains)]
    return Table(columns, list(trials))


def grid_table(trials: Sequence[TrialRecord], keys: Sequence[str], objectives: Sequence[str],
               retrains: Mapping[int, dict[str, Any]], log: Collection[str] = ()) -> Table:
    """A grid study's table: one row per grid point, sorted by the grid keys (in ``keys``
    order), the best-ranked trial where a point ran more than once (``trials`` best first)."""
    points: dict[tuple[Any, ...], TrialRecord] = {}
    for trial in trials:
        points.setdefault(tuple(trial.params.get(k) for k in keys), trial)
    rows = [points[p] for p in sorted(points, key=lambda p: tuple(_sort_key(v) for v in p))]
    columns = [*param_columns(rows, keys, log), Column("trial", lambda t: t.number, str),
               *measurement_columns(rows, objectives, retrains)]
    return Table(columns, rows)


def _sort_key(value: Any) -> tuple[int, Any]:
    """Numbers by value, then strings, then unset; never comparing a number with a string."""
    if value is None:
        return (2, "")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, value)
    return (1, str(value))


def class_table(trial: TrialRecord, retrain: Mapping[str, Any] | None = None) -> Table:
    """Images per class (rows) in each split the trial recorded, the test split's from its
    latest ``hpo retrain --test``, and the class weight its training loss applied."""
    counts = trial.class_counts()
    test = ((retrain or {}).get("test") or {}).get("class_counts")
    names = list(next(iter(counts.values()), {}))
    if test and len(test) == len(names):
        counts["test"] = dict(zip(names, test))
    weights = trial.class_weights()
    rows = [_ClassRow(name, {split: c.get(name) for split, c in counts.items()},
                      weights.get(name) if weights else None) for name in names]
    columns = [Column("class", lambda r: r.name, str, numeric=False)]
    columns += [Column(split, _split_count(split), fmt_count) for split in counts]
    columns.append(Column("weight", lambda r: r.weight, lambda v: "none" if v is None else fmt_fixed(v, 3)))
    return Table(columns, rows)


@dataclass(frozen=True)
class _ClassRow:
    name: str
    counts: dict[str, int | None]
    weight: float | None


def _split_count(split: str) -> Callable[[Any], Any]:
    return lambda row: row.counts.get(split)
