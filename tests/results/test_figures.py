"""The report's figures as a printed page needs them, checked on the Figure objects the
report draws for real digits studies (a random search with a conditional parameter, and a
grid): one title, axis labels, a legend where there are several series, integer ticks on
axes that count epochs or trials, text at 8 pt or more on a 6.5 in page, and no two text
boxes overlapping within an axes (window extents after a draw).

Each figure is also written to tests/results/rendered/ (ignored by git) to be looked at.
"""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from hpo.artifacts.style import SMALL_PT, WIDTH_IN
from hpo.cli.main import cli
from hpo.results import report as report_module
from hpo.results.figures import NOT_SET
from hpo.storage.urls import resolve_storage
from hpo.study.studies import load_study
from tests.results.test_report import GRADIENT_SPEC
from tests.specs import run_cli_study, spec_text

RENDERED = Path(__file__).parent / "rendered"

# n_layers 1 or 2 makes model.width[1] conditional (set only with 2 layers); model.init's
# names are the long categorical labels that overprinted Optuna's numeric ticks.
SEARCH = {
    "model.activation": "{choices: [gelu, relu, tanh]}",  # sorts first: its labels and model.init's at one height
    "train.lr": "{low: 1.0e-3, high: 0.5, log: true}",
    "model.n_layers": "{choices: [1, 2]}",
    "model.width": "{choices: [8, 16], repeat: model.n_layers}",
    "model.init": "{choices: [default, kaiming_normal, xavier_normal]}",
}
GRID_SEARCH = {
    "train.batch_size": "{choices: [32, 128]}",
    "train.lr": "{choices: [0.003, 0.03, 0.3]}",
    "train.epochs": "{choices: [1, 2]}",
}


def _invoke(*args: str):
    return CliRunner().invoke(cli, list(args))




def _report_figures(journal: str, name: str, out: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """Every figure ``write_report`` saves, by file name, kept open for the checks (and a
    copy of each PNG in RENDERED)."""
    kept: dict[str, object] = {}
    save = report_module._Context.save

    def keep(ctx, figure, file, section, alt):
        kept[file] = figure
        RENDERED.mkdir(exist_ok=True)
        figure.savefig(RENDERED / f"{name}_{file}", dpi=ctx_dpi(), bbox_inches="tight")
        with monkeypatch.context() as m:  # the report's own save, without closing the figure
            m.setattr("matplotlib.pyplot.close", lambda *_: None)
            save(ctx, figure, file, section, alt)

    monkeypatch.setattr(report_module._Context, "save", keep)
    report_module.write_report(load_study(name, resolve_storage(journal)), out, top=3)
    return kept


def ctx_dpi() -> int:
    return report_module.DPI


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    root = tmp_path_factory.mktemp("figures")
    search = run_cli_study(root, "search", spec_text("search", n_trials=8, epochs=3, sampler="random",
                                                    search=SEARCH))
    grid = run_cli_study(root, "grid", spec_text("grid", n_trials=12, sampler="grid", search=GRID_SEARCH))
    gradients = run_cli_study(root, "vanishing", GRADIENT_SPEC)
    RENDERED.mkdir(exist_ok=True)
    best = load_study("search", resolve_storage(search)).study.best_trial
    for picture in ("learning_curve.svg", "confusion_matrix.png"):  # the best trial's, as the worker drew them
        found = sorted((root / "artifacts").rglob(best.user_attrs["artifacts"][picture]))
        assert found, picture
        shutil.copyfile(found[0], RENDERED / f"trial_{picture}")
    return {"search": search, "grid": grid, "vanishing": gradients}


@pytest.fixture(scope="module")
def search_figures(studies, tmp_path_factory):
    with pytest.MonkeyPatch.context() as m:
        return _report_figures(studies["search"], "search", tmp_path_factory.mktemp("search-report"), m)


@pytest.fixture(scope="module")
def grid_figures(studies, tmp_path_factory):
    with pytest.MonkeyPatch.context() as m:
        return _report_figures(studies["grid"], "grid", tmp_path_factory.mktemp("grid-report"), m)


@pytest.fixture(scope="module")
def gradient_figures(studies, tmp_path_factory):
    with pytest.MonkeyPatch.context() as m:
        return _report_figures(studies["vanishing"], "vanishing", tmp_path_factory.mktemp("vanishing-report"), m)


# --- what every figure must satisfy ----------------------------------------------------


def _plot_axes(fig):
    """The figure's axes other than colorbars."""
    return [ax for ax in fig.axes if getattr(ax, "_colorbar", None) is None]


def _drawn_tick_labels(axis):
    low, high = sorted(axis.get_view_interval())
    span = high - low
    return [tick.label1 for tick in [*axis.get_major_ticks(), *axis.get_minor_ticks()]
            if tick.label1.get_visible() and tick.label1.get_text()
            and low - 1e-9 * span <= tick.get_loc() <= high + 1e-9 * span]


def _texts(ax):
    """Every visible, non-empty text of an axes: titles, axis labels, tick labels drawn,
    annotations and text, and its legend's entries."""
    texts = [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label,
             *_drawn_tick_labels(ax.xaxis), *_drawn_tick_labels(ax.yaxis), *ax.texts]
    if ax.get_legend() is not None:
        texts += ax.get_legend().get_texts()
    return [t for t in texts if t.get_visible() and t.get_text().strip()]


def _overlaps(fig) -> list[tuple[str, str]]:
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    clashes = []
    groups = [_texts(ax) for ax in fig.axes]
    figure_texts = [t for t in fig.texts if t.get_text().strip()]
    for legend in fig.legends:
        figure_texts += legend.get_texts()
    groups.append(figure_texts)
    for texts in groups:
        for a, b in itertools.combinations(texts, 2):
            if a.get_window_extent(renderer).overlaps(b.get_window_extent(renderer)):
                clashes.append((a.get_text(), b.get_text()))
    return clashes


def _titles(fig) -> list[str]:
    suptitle = fig._suptitle.get_text() if fig._suptitle is not None else ""
    return [t for t in [suptitle, *(ax.title.get_text() for ax in _plot_axes(fig))] if t]


def _check_common(name, fig, *, labels=True):
    assert fig.get_size_inches()[0] >= WIDTH_IN - 1e-6, name
    assert not _overlaps(fig), (name, _overlaps(fig))
    for ax in fig.axes:  # no second title beside the first (Optuna's importances drew one)
        assert not ax._left_title.get_text() and not ax._right_title.get_text(), name
    small = [(t.get_text(), t.get_fontsize()) for ax in fig.axes for t in _texts(ax) if t.get_fontsize() < SMALL_PT]
    assert not small, (name, small)
    if not labels:  # parallel coordinates: each axis is named under it (test below)
        return
    for ax in _plot_axes(fig):
        assert ax.get_xlabel(), (name, "x label")
    assert _plot_axes(fig)[0].get_ylabel(), (name, "y label")


def _integer_ticks(ax):
    locs = [t.get_loc() for t in ax.xaxis.get_major_ticks()
            if t.label1.get_visible() and t.label1.get_text()
            and min(ax.get_xlim()) <= t.get_loc() <= max(ax.get_xlim())]
    return locs and all(float(v).is_integer() for v in locs)


def _legend_labels(fig) -> list[str]:
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)]
    return [t.get_text() for legend in legends for t in legend.get_texts()]


# --- the random search: every figure ---------------------------------------------------


def test_the_report_draws_every_figure(search_figures, grid_figures):
    assert {"history.png", "importances.png", "parallel_coordinates.png", "learning_curves.png",
            "tradeoffs.png"} <= set(search_figures)
    assert "grid.png" not in search_figures  # a random search: no grid
    assert "grid.png" in grid_figures


@pytest.mark.parametrize("file", ["history.png", "importances.png", "parallel_coordinates.png",
                                  "learning_curves.png", "tradeoffs.png"])
def test_each_figure_has_one_title_labels_and_no_overlapping_text(search_figures, file):
    fig = search_figures[file]
    _check_common(file, fig, labels=file != "parallel_coordinates.png")
    assert len(_titles(fig)) == 1, _titles(fig)


def test_history_counts_trials_in_whole_numbers_with_a_legend(search_figures):
    fig = search_figures["history.png"]
    (ax,) = _plot_axes(fig)
    assert ax.get_xlabel() == "trial number" and _integer_ticks(ax)
    assert len(_legend_labels(fig)) == 2


def test_learning_curves_show_train_and_validation_by_model_and_trial(search_figures):
    fig = search_figures["learning_curves.png"]
    axes = _plot_axes(fig)
    assert [ax.get_xlabel() for ax in axes] == ["epoch", "epoch"]
    assert all(_integer_ticks(ax) for ax in axes)
    labels = _legend_labels(fig)
    assert sum(label.startswith("mlp, trial ") for label in labels) == 3  # --top 3
    assert "validation" in labels and "training" in labels
    loss = axes[1]
    styles = {line.get_linestyle() for line in loss.get_lines()}
    assert {"-", "--"} <= styles  # validation solid, train loss dashed


def test_parallel_coordinates_name_unset_values_and_keep_weak_trials_visible(search_figures):
    fig = search_figures["parallel_coordinates.png"]
    ax = _plot_axes(fig)[0]  # 6 parameters: 5 on the first row, train.lr on the second
    assert len(_plot_axes(fig)) == 2
    names = [t.get_text().replace("\n", "") for t in ax.get_xticklabels()]
    assert names == ["model.activation", "model.init", "model.n_layers", "model.width[0]", "model.width[1]",
                     "val_accuracy"]
    labels = [t.get_text() for t in ax.texts]
    assert "None" not in labels and NOT_SET in labels  # model.width[1] without a second layer
    assert "kaiming_normal" in labels
    # Every trial's line darker than a light grey: none fades into the white page.
    for line in ax.get_lines():
        if len(line.get_xdata()) > 2:
            r, g, b, *_ = line.get_color()
            assert 0.299 * r + 0.587 * g + 0.114 * b < 0.85, line.get_color()


def test_tradeoffs_leave_out_peak_memory_on_cpu(search_figures):
    fig = search_figures["tradeoffs.png"]
    assert [ax.get_xlabel() for ax in _plot_axes(fig)] == ["parameters", "training time (s)"]
    assert sum(label.startswith("mlp, trial ") for label in _legend_labels(fig)) == 3


# --- the grid study --------------------------------------------------------------------


def test_grid_heatmap_one_panel_per_epochs(grid_figures):
    fig = grid_figures["grid.png"]
    _check_common("grid.png", fig)
    panels = _plot_axes(fig)
    assert [ax.get_title() for ax in panels] == ["train.epochs = 1", "train.epochs = 2"]
    assert fig._suptitle is not None and fig._suptitle.get_text().startswith("val_accuracy over the grid")
    for ax in panels:
        assert ax.get_xlabel() == "train.lr"
        assert [t.get_text() for t in ax.get_xticklabels()] == ["0.003", "0.03", "0.3"]
        assert len([t for t in ax.texts if t.get_text()]) == 6  # 2 batch sizes x 3 lrs, each written
    assert panels[0].get_ylabel() == "train.batch_size"
    assert any(getattr(ax, "_colorbar", None) is not None for ax in fig.axes)


def test_a_grid_point_run_twice_shows_its_best_ranked_run_as_the_grid_table_does():
    """One rule for a repeated point in grid.png and grid_table: the best-ranked run, not a
    mean in one and a run in the other."""
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState

    from hpo.results.figures import grid_figure
    from hpo.results.tables import grid_table
    from hpo.study.attrs import TrialRecord

    def record(number, batch_size, lr, value):
        return TrialRecord(number=number, state=TrialState.COMPLETE, values=[value],
                           params={"train.batch_size": batch_size, "train.lr": lr},
                           datetime_start=None, datetime_complete=None, user_attrs={})

    ranked = [record(3, 32, 0.1, 0.9), record(1, 32, 0.01, 0.8), record(2, 64, 0.1, 0.65),
              record(4, 64, 0.01, 0.6), record(0, 32, 0.1, 0.5)]  # best first; trial 0 repeats trial 3's point
    keys = ["train.batch_size", "train.lr"]
    fig = grid_figure(ranked, lambda t: t.values[0], "val_accuracy", keys)
    (ax,) = _plot_axes(fig)
    written = sorted(t.get_text() for t in ax.texts)
    assert written == ["0.600", "0.650", "0.800", "0.900"]  # not 0.700, the mean of 0.9 and 0.5
    assert any(a.get_ylabel() == "val_accuracy (best run per point)" for a in fig.axes if a not in (ax,))
    plt.close(fig)
    table = grid_table(ranked, keys, ["val_accuracy"], {})
    trial_col = table.header.index("trial")
    assert {(row[0], row[1]): row[trial_col] for row in table.raw()}[32, 0.1] == 3


@pytest.mark.parametrize("file", ["history.png", "learning_curves.png", "tradeoffs.png", "parallel_coordinates.png"])
def test_grid_study_figures_pass_the_same_checks(grid_figures, file):
    _check_common(file, grid_figures[file], labels=file != "parallel_coordinates.png")


def test_gradient_norms_figure_one_title_a_legend_per_epoch(gradient_figures):
    fig = gradient_figures["gradient_norms.png"]
    _check_common("gradient_norms.png", fig)
    assert len(_titles(fig)) == 1 and _titles(fig)[0].startswith("Gradient norms per layer: mlp, trial ")
    assert _legend_labels(fig) == ["epoch 1", "epoch 2", "epoch 3"]


# --- the trial pictures share the report's style ---------------------------------------


def test_trial_pictures_use_the_reports_font_size_and_colours(studies, tmp_path):
    from xml.etree import ElementTree

    import matplotlib

    from hpo.artifacts.images import CM_HIGH, CM_LOW, SERIES, _font, draw_learning_curve
    from hpo.artifacts.style import FONT_FAMILY, FONT_PT, matplotlib_rc
    from hpo.training import EpochMetrics

    cycle = [c["color"] for c in matplotlib_rc()["axes.prop_cycle"]]
    assert [matplotlib.colors.to_hex(tuple(v / 255 for v in colour)) for _, _, colour, _, _ in SERIES] == cycle[:3]
    blues = matplotlib.colormaps["Blues"]
    assert [round(v * 255) for v in blues(0.0)[:3]] == list(CM_LOW)
    assert [round(v * 255) for v in blues(1.0)[:3]] == list(CM_HIGH)
    history = [EpochMetrics(epoch=e, train_loss=1 / e, val_loss=1.1 / e, val_accuracy=0.5 + e / 10,
                            seconds=0.1, lr=1e-3) for e in (1, 2, 3)]
    root = ElementTree.parse(draw_learning_curve(history, tmp_path / "curve.svg", title="mlp, trial 0"))
    svg = root.getroot()
    assert svg.get("font-family").startswith(FONT_FAMILY)
    # At 6.5 in across, the curve's text is the report's FONT_PT (12 px of 640 is 8.9 pt).
    assert abs(float(svg.get("font-size")) * 6.5 * 72 / float(svg.get("width")) - FONT_PT) < 0.5
    assert "DejaVu" in _font().getname()[0]  # the confusion matrix's text: the report's font


def test_trial_curve_draws_train_accuracy_when_the_trial_recorded_it(tmp_path):
    from types import SimpleNamespace
    from xml.etree import ElementTree

    from hpo.artifacts.images import OPTIONAL_SERIES, SERIES, WIDTH, draw_learning_curve

    history = [SimpleNamespace(epoch=e, train_loss=1 / e, val_loss=1.1 / e, val_accuracy=0.5 + e / 10,
                               train_accuracy=0.6 + e / 10, seconds=0.1, lr=1e-3) for e in (1, 2, 3)]
    svg = ElementTree.parse(draw_learning_curve(history, tmp_path / "curve.svg")).getroot()
    ns = "{http://www.w3.org/2000/svg}"
    strokes = {line.get("stroke") for line in svg.iter(f"{ns}polyline")}
    assert len(strokes) == len(SERIES) + len(OPTIONAL_SERIES)
    texts = [t.text for t in svg.iter(f"{ns}text")]
    assert "train accuracy" in texts and "accuracy" in texts  # the right axis holds both accuracies
    labels = {s[0] for s in (*SERIES, *OPTIONAL_SERIES)}
    legend_x = [float(t.get("x")) for t in svg.iter(f"{ns}text") if t.text in labels]
    assert min(legend_x) > 0 and max(legend_x) + 100 < WIDTH  # the legend stays on the picture


def test_report_curves_draw_train_accuracy_when_recorded(studies):
    import dataclasses

    from hpo.results.figures import learning_curves_figure
    from hpo.study.attrs import trial_records

    records = trial_records(load_study("search", resolve_storage(studies["search"])).study.get_trials())
    top = [dataclasses.replace(t, curves={**t.curves, "train_accuracy": [0.5, 0.7, 0.8]}) for t in records[:2]]
    fig = learning_curves_figure(top, [])
    accuracy = _plot_axes(fig)[0]
    assert sum(line.get_linestyle() == "--" for line in accuracy.get_lines()) == 2
    _check_common("learning_curves (train accuracy)", fig)


def test_many_parameters_wrap_into_rows_that_each_end_on_the_objective(studies, monkeypatch):
    """The quickstart's 13 parameters on one row printed at a third of 8 pt; rows of
    PARALLEL_PER_ROW keep the figure 6.5 in wide (here 2 per row: 6 parameters, 3 rows)."""
    from hpo.results import figures

    monkeypatch.setattr(figures, "PARALLEL_PER_ROW", 2)
    study = load_study("search", resolve_storage(studies["search"])).study
    fig = figures.parallel_figure(study, lambda t: t.values[0], "val_accuracy", maximize=True)
    rows = _plot_axes(fig)
    assert len(rows) == 3 and tuple(fig.get_size_inches())[0] == WIDTH_IN
    names = [[t.get_text().replace("\n", "") for t in ax.get_xticklabels()] for ax in rows]
    assert [row[-1] for row in names] == ["val_accuracy"] * 3
    assert [len(row) for row in names] == [3, 3, 3]
    _check_common("parallel_coordinates (rows)", fig, labels=False)
    assert len(_titles(fig)) == 1
