"""The per-trial pictures: a learning-curve SVG with axes that fit the values and every series
drawn; a confusion-matrix PNG whose cells are as dark as their counts."""

from __future__ import annotations

import math
from xml.etree import ElementTree

import pytest
from PIL import Image

from hpo.artifacts.images import (
    BOTTOM,
    CM_HIGH,
    CM_LOW,
    HEIGHT,
    LEFT,
    RIGHT,
    SERIES,
    TOP,
    WIDTH,
    draw_confusion_matrix,
    draw_learning_curve,
    nice_ticks,
)
from hpo.training import EpochMetrics


@pytest.mark.parametrize("high,expected", [
    (2.3, [0, 0.5, 1.0, 1.5, 2.0, 2.5]),
    (1.0, [0, 0.2, 0.4, 0.6, 0.8, 1.0]),
    (730.0, [0, 200, 400, 600, 800]),
    (0.0, [0, 0.2, 0.4, 0.6, 0.8, 1.0]),  # nothing finite to show: a unit axis
    (math.inf, [0, 0.2, 0.4, 0.6, 0.8, 1.0]),
])
def test_nice_ticks_start_at_zero_and_cover_the_values(high, expected):
    assert nice_ticks(high) == pytest.approx(expected)


SVG = "{http://www.w3.org/2000/svg}"


def _series(path) -> dict[str, list[tuple[float, float]]]:
    """The points of each series' line, by colour, from the SVG (which must parse)."""
    root = ElementTree.parse(path).getroot()
    assert (root.get("width"), root.get("height")) == (str(WIDTH), str(HEIGHT))
    return {line.get("stroke"): [tuple(map(float, p.split(","))) for p in line.get("points").split()]
            for line in root.iter(f"{SVG}polyline")}


def _hex(colour) -> str:
    return "#{:02x}{:02x}{:02x}".format(*colour)


def test_every_series_is_drawn_inside_the_plot(tmp_path):
    history = [EpochMetrics(epoch=e, train_loss=2 / e, val_loss=2.2 / e, val_accuracy=1 - 1 / (e + 1),
                            seconds=0.1, lr=1e-3) for e in range(1, 13)]
    lines = _series(draw_learning_curve(history, tmp_path / "curve.svg", title="trial <3> & co"))
    assert set(lines) == {_hex(colour) for _, _, colour, _, _ in SERIES}
    for points in lines.values():
        assert len(points) == 12
        assert all(LEFT <= x <= RIGHT and TOP <= y <= BOTTOM for x, y in points)
        assert points[0][0] == LEFT and points[-1][0] == RIGHT  # epochs span the axis
    accuracy = lines[_hex(SERIES[2][2])]
    assert accuracy[-1][1] == pytest.approx(BOTTOM - (1 - 1 / 13) * (BOTTOM - TOP), abs=0.1)


def test_a_diverged_epoch_leaves_out_what_is_not_finite(tmp_path):
    history = [EpochMetrics(epoch=1, train_loss=math.nan, val_loss=math.inf, val_accuracy=0.1,
                            seconds=0.1, lr=1e-3)]
    root = ElementTree.parse(draw_learning_curve(history, tmp_path / "curve.svg")).getroot()
    # One epoch, no lines; the one finite value is a marker mid-plot at 0.1.
    assert not list(root.iter(f"{SVG}polyline"))
    markers = [(float(p.get("points").split()[0].split(",")[0]), p) for p in root.iter(f"{SVG}polygon")]
    centre = (LEFT + RIGHT) / 2
    assert [x for x, _ in markers if abs(x - centre) < 1] == [centre]


@pytest.mark.parametrize("n", [3, 25, 100])
def test_confusion_matrix_cells_are_as_dark_as_their_counts(tmp_path, n):
    counts = [[5 if i == j else 0 for j in range(n)] for i in range(n)]  # every image right
    image = Image.open(draw_confusion_matrix(counts, [f"c{i}" for i in range(n)], tmp_path / "cm.png")).convert("RGB")
    colours = {colour for _, colour in image.getcolors(image.width * image.height)}
    assert {CM_HIGH, CM_LOW} <= colours
    assert image.width > 6 * n and image.height > 6 * n  # every class has a cell
