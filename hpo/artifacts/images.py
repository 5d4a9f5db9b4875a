"""Every trial's pictures, made cheaply: its learning curve (SVG) and, when it completes,
its validation confusion matrix (PNG, drawn with Pillow).

Written by hand because matplotlib, which draws hpo's reports, spent longer on these two small
figures (most of it laying out text) than all the rest of what the worker does for a trial,
and every trial gets them (BENCHMARKS.md, per-trial overhead). The pictures are simple on
purpose: loss on the left axis and validation accuracy (0-1) on the right, one point per
epoch; counts in shades of blue, true label by row. The curve is an SVG: the browser draws its
lines and text, so making one is string formatting, cheaper than Pillow's PNG encoding. The
matrix stays a PNG, since 100 classes are 10,000 cells; a palette PNG, cheaper to encode than
an RGB one (row filters).

Both are drawn in the report's style (hpo.artifacts.style): its font, its text size at the
size a page prints them, its series colours and its count colours.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from hpo.artifacts.style import COUNT_HIGH, COUNT_LOW, FONT_FAMILY, GRID, INK, PALETTE, svg_font_px

WIDTH, HEIGHT = 640, 400
LEFT, RIGHT, TOP, BOTTOM = 64, WIDTH - 64, 36, HEIGHT - 48  # the plot area
FONT_PX = svg_font_px(WIDTH)  # the report's text size when the curve is shown 6.5 in wide
CM_LOW, CM_HIGH = COUNT_LOW, COUNT_HIGH  # the confusion matrix's fewest and most
SERIES = (  # (label, EpochMetrics field, colour, axis, marker): the report's colours, in order
    ("train loss", "train_loss", PALETTE[0], "loss", "circle"),
    ("val loss", "val_loss", PALETTE[1], "loss", "square"),
    ("val accuracy", "val_accuracy", PALETTE[2], "accuracy", "triangle"),
)
#: Drawn when the trial recorded it (an EpochMetrics field older records do not have).
OPTIONAL_SERIES = (("train accuracy", "train_accuracy", PALETTE[3], "accuracy", "circle"),)


def nice_ticks(high: float, count: int = 5) -> list[float]:
    """0 up to at least ``high`` in steps of 1, 2 or 5 times a power of ten."""
    if not high > 0 or not math.isfinite(high):
        high = 1.0
    raw = high / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    return [i * step for i in range(math.ceil(high / step - 1e-9) + 1)]


def _label(value: float) -> str:
    return f"{value:.3g}"


def draw_learning_curve(history: Sequence[Any], path: Path, *, title: str = "") -> Path:
    """Train/val loss and val accuracy per epoch of ``history`` (EpochMetrics), as an SVG:
    lines and text that the viewer draws, so nothing is rasterised or compressed here."""
    epochs = [m.epoch for m in history]
    losses = [v for m in history for v in (m.train_loss, m.val_loss) if math.isfinite(v)]
    loss_ticks = nice_ticks(max(losses, default=1.0))
    axes = _CurveAxes(min(epochs, default=1), max(epochs, default=1), loss_ticks[-1])
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
           f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="{FONT_FAMILY}, sans-serif" font-size="{FONT_PX}" '
           f'fill="{_rgb(INK)}">',
           '<rect width="100%" height="100%" fill="white"/>']
    accuracy = "accuracy" if len(_series_of(history)) > len(SERIES) else "val accuracy"
    svg += _curve_frame(axes, loss_ticks, title, accuracy)
    svg += _curve_series(axes, history)
    svg.append("</svg>")
    path.write_text("\n".join(svg) + "\n")
    return path


@dataclass(frozen=True)
class _CurveAxes:
    """Where the learning curve puts an epoch (x) and a loss or an accuracy (y)."""

    first: int  # the first and last epochs
    last: int
    loss_top: float  # the top of the loss axis (accuracy goes up to 1)

    @property
    def span(self) -> int:
        return max(self.last - self.first, 1)

    def x_at(self, epoch: float) -> float:
        if self.last > self.first:
            return LEFT + (epoch - self.first) / self.span * (RIGHT - LEFT)
        return (LEFT + RIGHT) / 2

    def y_at(self, value: float, axis: str) -> float:
        top = self.loss_top if axis == "loss" else 1.0
        return BOTTOM - value / top * (BOTTOM - TOP)


def _curve_frame(axes: _CurveAxes, loss_ticks: list[float], title: str, accuracy: str) -> list[str]:
    """The grid, the two value axes, the epochs, the frame, the title and the axis titles."""
    svg = []
    for tick in loss_ticks:  # grid and the loss axis (left)
        y = axes.y_at(tick, "loss")
        svg.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{RIGHT}" y2="{y:.1f}" stroke="{_rgb(GRID)}"/>')
        svg.append(_text(LEFT - 6, y, _label(tick), anchor="end"))
    for tick in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):  # the accuracy axis (right)
        svg.append(_text(RIGHT + 6, axes.y_at(tick, "accuracy"), _label(tick), anchor="start"))
    step = max(1, math.ceil(axes.span / 12))
    for epoch in range(axes.first, axes.last + 1, step):
        svg.append(_text(axes.x_at(epoch), BOTTOM + 14, str(epoch)))
    svg.append(f'<rect x="{LEFT}" y="{TOP}" width="{RIGHT - LEFT}" height="{BOTTOM - TOP}" fill="none" '
               f'stroke="{_rgb(INK)}"/>')
    svg.append(_text((LEFT + RIGHT) / 2, HEIGHT - 10, "epoch"))
    svg.append(_text(LEFT, TOP / 2, title, anchor="start"))
    svg.append(_text(16, (TOP + BOTTOM) / 2, "loss", rotate=True))
    svg.append(_text(WIDTH - 10, (TOP + BOTTOM) / 2, accuracy, rotate=True))
    return svg


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _series_of(history: Sequence[Any]) -> tuple[tuple[str, str, tuple[int, int, int], str, str], ...]:
    """SERIES, and each of OPTIONAL_SERIES that some epoch of ``history`` recorded."""
    present = [s for s in OPTIONAL_SERIES if any(_finite(getattr(m, s[1], None)) for m in history)]
    return (*SERIES, *present)


def _curve_series(axes: _CurveAxes, history: Sequence[Any]) -> list[str]:
    """Each series' line and markers (finite values only), and its entry in the legend."""
    svg = []
    series = _series_of(history)
    for index, (label, field, colour, axis, marker) in enumerate(series):
        points = [(axes.x_at(m.epoch), axes.y_at(getattr(m, field), axis)) for m in history
                  if _finite(getattr(m, field, None))]
        if len(points) > 1:
            line = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            svg.append(f'<polyline points="{line}" fill="none" stroke="{_rgb(colour)}" stroke-width="2"/>')
        svg.extend(_marker(point, marker, colour) for point in points)
        # The legend, above the plot, where no curve can be, ending at the right.
        legend_x = RIGHT - 300 - 105 * (len(series) - len(SERIES)) + 105 * index
        svg.append(_marker((legend_x, TOP / 2), marker, colour))
        svg.append(_text(legend_x + 9, TOP / 2, label, anchor="start"))
    return svg


def _rgb(colour: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*colour)


def _text(x: float, y: float, text: str, *, anchor: str = "middle", rotate: bool = False) -> str:
    turn = f' transform="rotate(-90 {x:.1f} {y:.1f})"' if rotate else ""
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" dominant-baseline="middle"{turn}>'
            f"{escape(text)}</text>")


def _marker(at: tuple[float, float], shape: str, colour: tuple[int, int, int]) -> str:
    x, y, r, fill = at[0], at[1], 3.5, _rgb(colour)
    if shape == "circle":
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r}" fill="{fill}"/>'
    if shape == "square":
        return f'<rect x="{x - r:.1f}" y="{y - r:.1f}" width="{2 * r}" height="{2 * r}" fill="{fill}"/>'
    corners = [(x, y - r - 1), (x - r - 1, y + r), (x + r + 1, y + r)]
    return f'<polygon points="{" ".join(f"{a:.1f},{b:.1f}" for a, b in corners)}" fill="{fill}"/>'


def draw_confusion_matrix(counts: Sequence[Sequence[int]], class_names: Sequence[str], path: Path,
                          *, title: str = "") -> Path:
    """``counts[true][predicted]`` as a grid of blue cells, darker for more; the counts are
    written in the cells up to 20 classes, the class names beside them up to 40."""
    from PIL import Image, ImageDraw

    n = len(counts)
    font = _font()
    cell = max(6, min(48, 480 // max(n, 1)))
    names = [str(c)[:12] for c in class_names] if n <= 40 else []
    label_room = max((int(font.getlength(name)) for name in names), default=0) + 8
    left, top = 34 + label_room, 36
    size = (left + n * cell + 16, top + n * cell + label_room + 30)
    image = Image.new("P", size, "white")
    draw = ImageDraw.Draw(image)
    most = max((max(row) for row in counts), default=0) or 1
    for i, row in enumerate(counts):
        for j, count in enumerate(row):
            shade = count / most
            colour = tuple(round(a + (b - a) * shade) for a, b in zip(CM_LOW, CM_HIGH))
            box = [left + j * cell, top + i * cell, left + (j + 1) * cell - 1, top + (i + 1) * cell - 1]
            draw.rectangle(box, fill=colour)
            if n <= 20:
                draw.text((box[0] + cell / 2, box[1] + cell / 2), str(count), font=font, anchor="mm",
                          fill="white" if shade > 0.5 else INK)
    for k, name in enumerate(names):
        draw.text((left - 4, top + (k + 0.5) * cell), name, fill=INK, font=font, anchor="rm")
        _vertical_text(image, name, (round(left + (k + 0.5) * cell), top + n * cell + 4 + label_room // 2), font)
    draw.rectangle([left - 1, top - 1, left + n * cell, top + n * cell], outline=INK)
    draw.text((left, top / 2), title, fill=INK, font=font, anchor="lm")
    draw.text((left + n * cell / 2, size[1] - 10), "predicted label", fill=INK, font=font, anchor="md")
    _vertical_text(image, "true label", (12, top + n * cell // 2), font)
    image.save(path, format="PNG")
    return path


@functools.cache
def _font() -> Any:
    """The report's font (matplotlib's DejaVu Sans, found without importing matplotlib),
    else Pillow's own."""
    import importlib.util

    from PIL import ImageFont

    spec = importlib.util.find_spec("matplotlib")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        if path.is_file():
            return ImageFont.truetype(str(path), size=FONT_PX)
    return ImageFont.load_default(size=FONT_PX)


def _vertical_text(image: Any, text: str, centre: tuple[int, int], font: Any) -> None:
    """An axis title, rotated to read bottom to top (drawn as a mask, pasted in ink)."""
    from PIL import Image, ImageDraw

    left, top, right, bottom = font.getbbox(text)
    mask = Image.new("L", (right + 2, bottom + 2), 0)
    ImageDraw.Draw(mask).text((1, 1), text, fill=255, font=font)
    # A palette image cannot blend: keep the glyphs' solid pixels, as its own text does.
    mask = mask.rotate(90, expand=True).point(lambda v: 255 if v > 100 else 0)
    ink = image.palette.getcolor(INK, image)
    image.paste(ink, (centre[0] - mask.width // 2, centre[1] - mask.height // 2), mask)
