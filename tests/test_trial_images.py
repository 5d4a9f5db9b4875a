"""The per-trial PNGs: a learning curve with axes that fit the values and every series drawn;
a confusion matrix whose cells are as dark as their counts."""

from __future__ import annotations

import math

import pytest
from PIL import Image

from hpo.trial_images import (
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


def _colours(path) -> set[tuple[int, int, int]]:
    image = Image.open(path).convert("RGB")
    assert image.size == (WIDTH, HEIGHT)
    return {colour for _, colour in image.getcolors(WIDTH * HEIGHT)}


def test_every_series_is_drawn(tmp_path):
    history = [EpochMetrics(epoch=e, train_loss=2 / e, val_loss=2.2 / e, val_accuracy=1 - 1 / (e + 1),
                            seconds=0.1, lr=1e-3) for e in range(1, 13)]
    path = draw_learning_curve(history, tmp_path / "curve.png", title="trial 3")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {colour for *_, colour, _axis, _marker in SERIES} <= _colours(path)


def test_a_diverged_epoch_leaves_out_what_is_not_finite(tmp_path):
    history = [EpochMetrics(epoch=1, train_loss=math.nan, val_loss=math.inf, val_accuracy=0.1,
                            seconds=0.1, lr=1e-3)]
    image = Image.open(draw_learning_curve(history, tmp_path / "curve.png")).convert("RGB")
    # The one finite value is drawn where it belongs: mid-plot (a single epoch), at 0.1.
    at = (round((LEFT + RIGHT) / 2), round(BOTTOM - 0.1 * (BOTTOM - TOP)))
    assert image.getpixel(at) == SERIES[2][2]


@pytest.mark.parametrize("n", [3, 25, 100])
def test_confusion_matrix_cells_are_as_dark_as_their_counts(tmp_path, n):
    counts = [[5 if i == j else 0 for j in range(n)] for i in range(n)]  # every image right
    image = Image.open(draw_confusion_matrix(counts, [f"c{i}" for i in range(n)], tmp_path / "cm.png")).convert("RGB")
    colours = {colour for _, colour in image.getcolors(image.width * image.height)}
    assert {CM_HIGH, CM_LOW} <= colours
    assert image.width > 6 * n and image.height > 6 * n  # every class has a cell
