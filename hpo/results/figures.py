"""The report's figures, drawn for a printed page (hpo.artifacts.style: 6.5 in wide at 200
dpi, no text below 8 pt, the trial pictures' fonts and colours).

Each function takes what it draws (trial records, scores, a study) and returns a matplotlib
Figure; hpo.results.report decides which to draw and saves them. hpo draws these itself
rather than restyling Optuna's plots: Optuna's parallel coordinates prints its tick labels
over one another and "None" for unset conditional parameters, its importance plot carries a
title of its own, and its history has fractional trial ticks, none of which can be changed
from outside. Where a figure counts epochs or trials its axis has integer ticks; where labels
could collide they are placed so that they cannot (legends beside or below the plot, trial
numbers in the legend rather than next to points).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from hpo.artifacts.style import (
    MUTED,
    PALETTE,
    ROW_IN,
    SMALL_PT,
    VALUE_CMAP,
    WIDTH_IN,
    hex_colour,
    matplotlib_rc,
)
from hpo.study.attrs import TrialRecord

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from optuna import Study

#: Text longer than this (a category, a parameter name) is cut with an ellipsis, so that a
#: parallel-coordinates axis' labels fit in the room between two axes.
MAX_LABEL = 14
#: Where a parameter a trial did not set (a conditional one) sits on its axis: below the
#: values, labelled NOT_SET rather than "None".
NOT_SET_AT, NOT_SET = -0.15, "not set"
#: Parameters per row of parallel coordinates: with the objective's axis, 6 axes across
#: 6.5 in leave about 1 in for each axis' labels (MAX_LABEL characters at 8 pt: 0.85 in).
PARALLEL_PER_ROW = 5
#: Grid cells are written in up to this many columns; beyond, the colour alone says it.
MAX_ANNOTATED_COLUMNS = 10


@contextlib.contextmanager
def styled() -> Iterator[None]:
    """Draw in hpo's style (hpo.artifacts.style); every figure here is made inside it."""
    import matplotlib

    # matplotlib types rc_context's keys as a Literal of every rcParam name.
    with matplotlib.rc_context(cast("Any", matplotlib_rc())):
        yield


def colour(index: int) -> str:
    return hex_colour(PALETTE[index % len(PALETTE)])


def model_label(trial: TrialRecord) -> str:
    """What trained, for a legend: the architecture (torchvision, timm), the custom module's
    class, or the model family (mlp, cnn, ...)."""
    model = (trial.config or {}).get("model") or {}
    if model.get("arch"):
        return str(model["arch"])
    if model.get("module"):
        return str(model["module"]).rpartition(":")[2] or str(model["module"])
    return str(model.get("name") or "model")


def series_label(trial: TrialRecord) -> str:
    """A trial in a legend: ``mlp, trial 3``."""
    return f"{model_label(trial)}, trial {trial.number}"


def short(text: str, limit: int = MAX_LABEL) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _integer_ticks(ax: Axes, axis: str = "x") -> None:
    from matplotlib.ticker import MaxNLocator

    (ax.xaxis if axis == "x" else ax.yaxis).set_major_locator(MaxNLocator(integer=True, nbins=8))


# --- history and importances -----------------------------------------------------------


def history_figure(trials: Sequence[TrialRecord], value: Callable[[TrialRecord], float], name: str,
                   *, maximize: bool) -> Figure:
    """Each complete trial's objective by trial number, and the best so far as a step line."""
    import matplotlib.pyplot as plt

    ordered = sorted(trials, key=lambda t: t.number)
    numbers, values = [t.number for t in ordered], [value(t) for t in ordered]
    best: list[float] = []
    for v in values:
        best.append(v if not best else (max if maximize else min)(best[-1], v))
    with styled():
        fig, ax = plt.subplots(figsize=(WIDTH_IN, ROW_IN), layout="constrained")
        ax.scatter(numbers, values, s=18, color=colour(0), label=f"{name} of a trial", zorder=3)
        ax.step(numbers, best, where="post", color=colour(3), lw=1.5, label=f"best {name} so far")
        ax.set_xlabel("trial number")
        ax.set_ylabel(name)
        _integer_ticks(ax)
        ax.legend(loc="best")
        ax.set_title(f"Optimisation history: {name}")
    return fig


def importance_figure(scores: Mapping[str, float], name: str, method: str) -> Figure:
    """Horizontal bars, most important on top, each with its score written after it."""
    import matplotlib.pyplot as plt

    items = sorted(scores.items(), key=lambda kv: kv[1])
    with styled():
        fig, ax = plt.subplots(figsize=(WIDTH_IN, max(1.6, 0.7 + 0.3 * len(items))), layout="constrained")
        positions = range(len(items))
        ax.barh(positions, [v for _, v in items], color=colour(0), height=0.6)
        ax.set_yticks(positions, [k for k, _ in items])
        for y, (_, v) in zip(positions, items):
            ax.annotate(f"{v:.2f}", (v, y), xytext=(3, 0), textcoords="offset points", va="center",
                        fontsize=SMALL_PT)
        top = max((v for _, v in items), default=1.0) or 1.0
        ax.set_xlim(0, top * 1.15)  # room for the last score
        ax.set_xlabel(f"importance for {name}")
        ax.set_ylabel("hyperparameter")
        ax.grid(axis="y", visible=False)
        ax.set_title(f"Hyperparameter importances ({method}): {name}")
    return fig


# --- parallel coordinates --------------------------------------------------------------


@dataclass(frozen=True)
class _ParamAxis:
    """One parameter's axis: where each value sits (0 to 1) and the labels drawn on it."""

    name: str
    position: Callable[[Any], float]
    ticks: list[tuple[float, str]]


def _param_axis(name: str, values: list[Any], log: bool) -> _ParamAxis:
    """A numeric axis (log for a log-scaled range) with three labelled values, or a
    categorical one with each choice at evenly spaced heights; an unset value sits at
    NOT_SET_AT on either."""
    present = [v for v in values if v is not None]
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in present)
    if numeric and len(set(present)) > 3 or numeric and log:
        scale = (lambda v: math.log10(v)) if log and min(present) > 0 else (lambda v: float(v))
        low, high = scale(min(present)), scale(max(present))
        span = (high - low) or 1.0

        def position(v: Any) -> float:
            return NOT_SET_AT if v is None else (scale(v) - low) / span

        ticks = [(0.0, min(present)), (0.5, None), (1.0, max(present))]
        middle = 10 ** ((low + high) / 2) if log and min(present) > 0 else (low + high) / 2
        labelled = [(p, f"{(middle if v is None else v):.3g}") for p, v in ticks]
    else:
        choices = sorted(set(present), key=lambda v: (str(type(v)), v) if numeric else str(v))
        where = {v: (i / (len(choices) - 1) if len(choices) > 1 else 0.5) for i, v in enumerate(choices)}

        def position(v: Any) -> float:
            return NOT_SET_AT if v is None else where[v]

        labelled = [(where[v], short(f"{v:.3g}" if isinstance(v, float) else str(v))) for v in choices]
    if any(v is None for v in values):
        labelled.append((NOT_SET_AT, NOT_SET))
    return _ParamAxis(name, position, labelled)


def _axis_title(name: str) -> str:
    """A dotted key on two lines at its last dot (``train.`` / ``batch_size``), so that
    neighbouring axes' names do not run into one another."""
    head, dot, tail = name.rpartition(".")
    return f"{head}{dot}\n{short(tail, 16)}" if dot else short(name, 16)


def parallel_figure(study: Study, value: Callable[[Any], float], name: str, *, maximize: bool) -> Figure:
    """One vertical axis per searched parameter and one for the objective; a line per
    complete trial, coloured by its objective (viridis: the worst trials dark, not white),
    the best drawn last, on top. More than PARALLEL_PER_ROW parameters are drawn in rows
    of that many, each ending on the objective's axis, so that the page stays 6.5 in wide
    and its labels 8 pt (one row of 13 axes would print at a third of that)."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize
    from optuna.distributions import FloatDistribution, IntDistribution
    from optuna.trial import TrialState

    trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if math.isfinite(value(t))]
    names = sorted({key for t in trials for key in t.params})
    log = {key: any(isinstance(d, FloatDistribution | IntDistribution) and d.log
                    for t in trials for k, d in t.distributions.items() if k == key) for key in names}
    params = [_param_axis(key, [t.params.get(key) for t in trials], log[key]) for key in names]
    objective = [value(t) for t in trials]
    target = _param_axis(name, list(objective), False)
    rows = [params[i:i + PARALLEL_PER_ROW] for i in range(0, len(params), PARALLEL_PER_ROW)] or [[]]
    norm = Normalize(min(objective), max(objective) if max(objective) > min(objective) else min(objective) + 1)
    cmap = plt.get_cmap(VALUE_CMAP)
    ordered = sorted(zip(trials, objective), key=lambda p: p[1], reverse=not maximize)  # worst first
    with styled():
        # No colour bar: the objective's own axis, last in each row, says what a colour is
        # worth, and the bar's width is better spent between the axes' labels.
        height = ROW_IN + 0.4 if len(rows) == 1 else 2.6 * len(rows)
        fig, grid = plt.subplots(len(rows), 1, figsize=(WIDTH_IN, height), layout="constrained", squeeze=False)
        for ax, row in zip(grid[:, 0], rows):
            _parallel_row(ax, [*row, target], ordered, lambda v: cmap(norm(v)))
        fig.suptitle(f"Parallel coordinates: {len(trials)} complete trials, coloured by {name}")
    return fig


def _parallel_row(ax: Axes, axes: list[_ParamAxis], ordered: list[tuple[Any, float]],
                  colour_of: Callable[[float], Any]) -> None:
    """One row of parallel coordinates: ``axes`` side by side (the objective's last), a line
    per trial in ``ordered``, each axis' labels on its left, in the room between two axes."""
    for trial, v in ordered:
        ys = [a.position(trial.params.get(a.name)) for a in axes[:-1]] + [axes[-1].position(v)]
        ax.plot(range(len(axes)), ys, color=colour_of(v), lw=1.3, alpha=0.85)
    for x, a in enumerate(axes):
        ax.axvline(x, color=hex_colour(MUTED), lw=0.8, zorder=0)
        for y, text in a.ticks:
            ax.annotate(text, (x, y), xytext=(-4, 0), textcoords="offset points", ha="right",
                        va="center", fontsize=SMALL_PT)
    ax.set_xticks(range(len(axes)), [_axis_title(a.name) for a in axes])
    # Always room for PARALLEL_PER_ROW + 1 axes, so that every row has the same spacing.
    ax.set_xlim(-0.9, max(len(axes), PARALLEL_PER_ROW + 1) - 0.8)
    ax.set_ylim(NOT_SET_AT - 0.08, 1.08)
    ax.set_yticks([])
    ax.grid(False)
    for side in ("left", "top", "right"):
        ax.spines[side].set_visible(False)


# --- hpo's own records -----------------------------------------------------------------


def learning_curves_figure(top: Sequence[TrialRecord], pruned: Sequence[TrialRecord]) -> Figure:
    """Accuracy and loss per epoch: one colour per top trial, validation solid and training
    dashed (training accuracy when the trial recorded it); pruned trials' validation curves
    thin and grey behind them. The legend is below the panels, off the curves."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    with styled():
        fig, axes = plt.subplots(1, 2, figsize=(WIDTH_IN, ROW_IN + 0.9), layout="constrained")
        panels = ((axes[0], "accuracy", "val_accuracy", "train_accuracy"),
                  (axes[1], "loss", "val_loss", "train_loss"))
        any_train = False
        for ax, label, val_key, train_key in panels:
            for trial in pruned:
                ys = trial.curve(val_key)
                ax.plot(range(1, len(ys) + 1), ys, color=hex_colour(MUTED), lw=0.8, ls=":")
            for i, trial in enumerate(top):
                for key, style in ((val_key, "-"), (train_key, "--")):
                    ys = trial.curve(key)
                    if ys:
                        any_train |= key == train_key
                        ax.plot(range(1, len(ys) + 1), ys, color=colour(i), ls=style, lw=1.5,
                                marker="o" if style == "-" else None, ms=3)
            ax.set_xlabel("epoch")
            ax.set_ylabel(label)
            _integer_ticks(ax)
        handles = [Line2D([], [], color=colour(i), lw=1.5, marker="o", ms=3, label=series_label(t))
                   for i, t in enumerate(top)]
        handles.append(Line2D([], [], color=hex_colour(PALETTE[7]), ls="-", label="validation"))
        if any_train:
            handles.append(Line2D([], [], color=hex_colour(PALETTE[7]), ls="--", label="training"))
        if pruned:
            handles.append(Line2D([], [], color=hex_colour(MUTED), ls=":", lw=0.8, label="pruned (validation)"))
        fig.legend(handles=handles, loc="outside lower center", ncol=min(3, len(handles)), frameon=False)
        fig.suptitle(f"Learning curves: top {len(top)} trials" + (f" and {len(pruned)} pruned" if pruned else ""))
    return fig


def _value_axis(ax: Axes, values: Sequence[float], log: bool, counts: bool) -> None:
    """A log axis only across more than a decade and a half (else matplotlib labels minor
    ticks, which overprint), labelled at its major ticks only; at most 5 ticks either way.
    Counts in engineering notation (1.2k, 3M); seconds as plain numbers (an SI "m" would
    read as minutes)."""
    from matplotlib.ticker import EngFormatter, FormatStrFormatter, LogLocator, MaxNLocator, NullFormatter

    if log and values and min(values) > 0 and max(values) / min(values) > 30:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, numticks=5))
        ax.xaxis.set_minor_formatter(NullFormatter())
    else:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
    ax.xaxis.set_major_formatter(EngFormatter(sep="") if counts else FormatStrFormatter("%g"))


def tradeoffs_figure(complete: Sequence[TrialRecord], pruned: Sequence[TrialRecord], top: Sequence[TrialRecord],
                     seconds: Callable[[TrialRecord], float | None]) -> Figure:
    """Best validation accuracy against parameters, training time and (GPU trials only)
    peak memory. The top trials are drawn in their learning-curve colours and named in the
    legend: numbers next to points overprint one another when points are close."""
    import matplotlib.pyplot as plt

    panels: list[tuple[str, str, Callable[[TrialRecord], float | None], bool]] = [
        ("parameters", "parameters", lambda t: t.params_total, True),
        ("training time (s)", "training time", seconds, False)]
    if any(gpu_memory(t) is not None for t in [*complete, *pruned]):
        panels.append(("peak GPU memory (MB)", "peak GPU memory", gpu_memory, False))
    top_colour = {t.number: colour(i) for i, t in enumerate(top)}
    with styled():
        fig, axes = plt.subplots(1, len(panels), figsize=(WIDTH_IN, ROW_IN + 0.9), sharey=True,
                                 layout="constrained", squeeze=False)
        for (label, _, get, counts), ax in zip(panels, axes[0]):
            groups = (("other complete trials", [t for t in complete if t.number not in top_colour],
                       {"color": colour(0), "alpha": 0.5}),
                      ("pruned trials", list(pruned), {"color": hex_colour(MUTED), "marker": "x"}))
            xs: list[float] = []
            for group_label, group, style in groups:
                points = [(get(t), t.best_val_accuracy) for t in group
                          if get(t) is not None and t.best_val_accuracy is not None]
                if points:
                    ax.scatter([p[0] for p in points], [p[1] for p in points], s=16, label=group_label, **style)
                    xs += [float(p[0]) for p in points if p[0] is not None]
            for trial in top:
                x, y = get(trial), trial.best_val_accuracy
                if x is not None and y is not None:
                    ax.scatter([x], [y], s=40, color=top_colour[trial.number], edgecolor="black", lw=0.5,
                               zorder=3, label=series_label(trial))
                    xs.append(float(x))
            _value_axis(ax, xs, True, counts)
            ax.set_xlabel(label)
        axes[0][0].set_ylabel("best validation accuracy")
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncol=3, frameon=False)
        what = " and ".join((", ".join(p[1] for p in panels[:-1]), panels[-1][1]))
        fig.suptitle(f"Best validation accuracy against {what}")
    return fig


def gpu_memory(trial: TrialRecord) -> float | None:
    """Peak memory where it means the trial's own (a CUDA device's peak allocation); None
    on CPU, where it is the worker process' peak resident set over every trial it ran."""
    device = trial.device or ""
    return trial.peak_memory_mb if device.startswith("cuda") else None


def gradient_figure(trial: TrialRecord, shown: Sequence[int]) -> Figure:
    """Per-layer gradient norms of one trial, one line per epoch in ``shown``, layers input
    to output on the x axis: a vanishing (or exploding) gradient is a slope across the
    layers, which stays readable for a ResNet's fifty layers."""
    import matplotlib.pyplot as plt

    assert trial.grad_norms is not None
    layers, norms = trial.grad_norms.layers, trial.grad_norms.norms
    cmap = plt.get_cmap(VALUE_CMAP)
    every = max(1, math.ceil(len(layers) / 24))  # at most ~24 names under the axis
    with styled():
        fig, ax = plt.subplots(figsize=(WIDTH_IN, ROW_IN + 1.2), layout="constrained")
        for n, e in enumerate(shown):
            # Log scale: a layer without a norm that epoch, or with none above 0, leaves a gap.
            ys = [v if v is not None and v > 0 else float("nan") for v in norms[e]]
            ax.plot(range(len(layers)), ys, marker="o", ms=3, lw=1.3,
                    color=cmap(n / max(1, len(shown) - 1) * 0.9), label=f"epoch {e + 1}")
        ax.set_yscale("log")
        ticks = list(range(0, len(layers), every))
        names = [short(layers[i], 20) for i in ticks]
        # Upright while the names fit side by side (about 60 characters across 6.5 in).
        ax.set_xticks(ticks, names, rotation=90 if sum(len(n) + 2 for n in names) > 60 else 0)
        ax.set_xlabel("layer (module path, input → output)")
        ax.set_ylabel("gradient L2 norm\n(mean over batches)")
        ax.grid(which="both", axis="y")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the lines, not on them
        ax.set_title(f"Gradient norms per layer: {series_label(trial)}")
    return fig


# --- grid studies ----------------------------------------------------------------------


def grid_keys(trials: Sequence[TrialRecord]) -> list[str]:
    """The searched keys that vary across the trials, in the order grid_figure lays them
    out: the panels' key first (an epochs key when there is one: curves over epochs are
    read panel by panel), then the rows' and the columns' (the most values across)."""
    values: dict[str, set[str]] = {}
    for trial in trials:
        for key, v in trial.params.items():
            values.setdefault(key, set()).add(repr(v))
    return sorted((k for k, vs in values.items() if len(vs) > 1),
                  key=lambda k: (not k.endswith("epochs"), len(values[k]), k))


def _sorted_values(trials: Sequence[TrialRecord], key: str) -> list[Any]:
    present = {t.params[key] for t in trials if key in t.params}
    return sorted(present, key=lambda v: (isinstance(v, str), v if not isinstance(v, str) else 0, str(v)))


def grid_figure(trials: Sequence[TrialRecord], value: Callable[[TrialRecord], float], name: str,
                keys: Sequence[str]) -> Figure:
    """The objective over two searched keys as a heatmap (rows the first, columns the
    second), one panel per value of a third when there is one; each cell the value of the
    best-ranked complete trial with that combination (``trials`` best first), written in it,
    a cell with none left blank. A point that ran more than once (a retry, a second worker,
    a re-run grid) shows the same run as the grid table (hpo.results.tables.grid_table), so
    that the figure and the table agree."""
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import Normalize

    rows_key, cols_key = keys[-2], keys[-1]  # the two with the most values on the axes
    panel_key = keys[0] if len(keys) == 3 else None
    panel_values = _sorted_values(trials, panel_key) if panel_key else [None]
    rows, cols = _sorted_values(trials, rows_key), _sorted_values(trials, cols_key)
    grids = []
    for p in panel_values:
        cells = np.full((len(rows), len(cols)), np.nan)
        for i, r in enumerate(rows):
            for j, c in enumerate(cols):
                found = [value(t) for t in trials if t.params.get(rows_key) == r and t.params.get(cols_key) == c
                         and (panel_key is None or t.params.get(panel_key) == p)]
                if found:
                    cells[i, j] = float(found[0])
        grids.append(cells)
    finite = [v for g in grids for v in g.ravel() if np.isfinite(v)]
    norm = Normalize(min(finite), max(finite) if max(finite) > min(finite) else min(finite) + 1e-9)
    cmap = plt.get_cmap(VALUE_CMAP)
    with styled():
        width = WIDTH_IN if len(panel_values) < 3 else max(WIDTH_IN, 2.4 * len(panel_values))
        fig, axes = plt.subplots(1, len(panel_values), figsize=(width, ROW_IN + 0.3), squeeze=False,
                                 layout="constrained", sharey=True)
        for ax, p, cells in zip(axes[0], panel_values, grids):
            image = ax.imshow(cells, cmap=cmap, norm=norm, aspect="auto")
            ax.set_xticks(range(len(cols)), [short(f"{c:g}" if isinstance(c, float) else str(c)) for c in cols])
            ax.set_yticks(range(len(rows)), [short(f"{r:g}" if isinstance(r, float) else str(r)) for r in rows])
            ax.grid(False)
            if len(cols) <= MAX_ANNOTATED_COLUMNS:
                for (i, j), v in np.ndenumerate(cells):
                    if np.isfinite(v):
                        light = sum(cmap(norm(v))[:3]) / 3 > 0.5
                        ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=SMALL_PT,
                                color="black" if light else "white")
            ax.set_xlabel(cols_key)
            if panel_key is not None:
                ax.set_title(f"{panel_key} = {p}", fontsize=SMALL_PT + 1)
        axes[0][0].set_ylabel(rows_key)
        fig.colorbar(image, ax=axes[0].tolist(), label=f"{name} (best run per point)")
        fig.suptitle(f"{name} over the grid" + (f", one panel per {panel_key}" if panel_key else ""))
    return fig
