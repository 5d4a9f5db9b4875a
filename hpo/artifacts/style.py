"""One look for every picture hpo draws: the report's matplotlib figures
(hpo.results.figures) and each trial's hand-drawn curve and confusion matrix
(hpo.artifacts.images) share these fonts, sizes, colours and resolution.

Sizes are for the page a student prints: a figure is drawn 6.5 in wide (a US-letter or A4
text width) at 200 dpi, and no text is below 8 pt there. Plain constants, no import: the
trial pictures are made in the worker, where importing matplotlib costs more than drawing.
"""

from __future__ import annotations

from typing import Any

FONT_FAMILY = "DejaVu Sans"  # matplotlib's own font, so it is there wherever hpo's plots are
FONT_PT = 9  # axis titles, legends
SMALL_PT = 8  # tick labels and annotations: the smallest text on a page
TITLE_PT = 10
DPI = 200
WIDTH_IN = 6.5  # one figure across the text width
ROW_IN = 3.0  # the height of one row of panels

INK = (40, 40, 40)
GRID = (225, 225, 225)
MUTED = (150, 150, 150)  # pruned trials and other context drawn behind the main series
# matplotlib's "tab10", the default cycle: series (trials, splits) in this order everywhere.
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))
# Objective values (parallel coordinates, grid heatmaps): viridis, whose weakest end is dark
# enough to see on white (a white-to-blue map loses the worst trials against the background).
VALUE_CMAP = "viridis"
# Counts (confusion matrices): matplotlib's "Blues" from its white end to its darkest, where
# no count should mean no ink.
COUNT_LOW, COUNT_HIGH = (247, 251, 255), (8, 48, 107)
COUNT_CMAP = "Blues"


def hex_colour(colour: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*colour)


def svg_font_px(width_px: int) -> int:
    """The font size, in SVG pixels, that prints at FONT_PT when a ``width_px`` wide picture
    is shown WIDTH_IN wide (a 640 px curve: 12 px)."""
    return round(FONT_PT * width_px / (WIDTH_IN * 72))


def matplotlib_rc() -> dict[str, Any]:
    """rcParams for the report's figures (used in ``matplotlib.rc_context``)."""
    return {
        "font.family": "sans-serif",
        "font.sans-serif": [FONT_FAMILY],
        "font.size": FONT_PT,
        "axes.titlesize": TITLE_PT,
        "axes.labelsize": FONT_PT,
        "xtick.labelsize": SMALL_PT,
        "ytick.labelsize": SMALL_PT,
        "legend.fontsize": SMALL_PT,
        "figure.titlesize": TITLE_PT,
        "figure.dpi": DPI,
        "savefig.dpi": DPI,
        "axes.edgecolor": hex_colour(INK),
        "text.color": hex_colour(INK),
        "axes.labelcolor": hex_colour(INK),
        "xtick.color": hex_colour(INK),
        "ytick.color": hex_colour(INK),
        "axes.grid": True,
        "grid.color": hex_colour(GRID),
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.prop_cycle": _cycler(),
        "image.cmap": VALUE_CMAP,
    }


def _cycler() -> object:
    from cycler import cycler

    return cycler(color=[hex_colour(c) for c in PALETTE])
