"""Line and marker styles that keep every plotted series apart.

A plot of method x SIP configs colours each method with its own hue and gives each SIP
setting its own shade of that hue, marker and line style, so no two series share a colour
and overlapping lines stay distinguishable (12 configs from tab10's default cycle made
``grad/topq:0.1`` and ``gradcam/absq:0.25`` the same orange).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">", "p")
LINESTYLES = ("-", "--", "-.", ":")
# matplotlib's tab10, then the darker half of tab20 for an 11th group onwards.
_BASE_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173")


@dataclass(frozen=True)
class SeriesStyle:
    """How one series is drawn: ``color`` (hex), ``marker`` and ``linestyle`` for matplotlib."""

    color: str
    marker: str
    linestyle: str

    def kwargs(self) -> dict[str, str]:
        return {"color": self.color, "marker": self.marker, "linestyle": self.linestyle}


def _hex(rgb: np.ndarray) -> str:
    return "#" + "".join(f"{round(float(c) * 255):02x}" for c in np.clip(rgb, 0, 1))


def _shade(colour: str, amount: float) -> str:
    """``colour`` moved towards black (``amount`` < 0) or white (> 0) by |amount|."""
    rgb = np.array([int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    rgb = rgb * (1 + amount) if amount < 0 else rgb + (1 - rgb) * amount
    return _hex(rgb)


def series_styles(pairs: Sequence[tuple[Hashable, Hashable]]) -> dict[tuple[Hashable, Hashable], SeriesStyle]:
    """A distinct style for each (group, variant) pair, e.g. (method, SIP).

    Groups get hues; variants get shades of their group's hue, markers and line styles.
    With a single group the variants get hues of their own instead.
    """
    groups = list(dict.fromkeys(group for group, _ in pairs))
    variants = list(dict.fromkeys(variant for _, variant in pairs))
    styles = {}
    for group, variant in pairs:
        g, v = groups.index(group), variants.index(variant)
        if len(groups) == 1:
            colour = _BASE_COLOURS[v % len(_BASE_COLOURS)]
        else:
            shades = np.linspace(-0.35, 0.45, len(variants)) if len(variants) > 1 else np.zeros(1)
            colour = _shade(_BASE_COLOURS[g % len(_BASE_COLOURS)], float(shades[v]))
        styles[(group, variant)] = SeriesStyle(colour, MARKERS[v % len(MARKERS)], LINESTYLES[v % len(LINESTYLES)])
    return styles


# Font sizes in points; at the 100 dpi the figures are saved with, 9 pt is 12.5 px, so every
# label stays legible (>= 10 px) at 100% zoom.
READABLE_FONTS = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "xtick.labelsize": 9,
                  "ytick.labelsize": 9, "legend.fontsize": 9, "figure.titlesize": 11}
