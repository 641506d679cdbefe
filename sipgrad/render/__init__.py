"""Rendering saliency maps: overlays, heatmaps and figures (always written atomically)."""

from sipgrad.render.figure import save_panels
from sipgrad.render.overlay import COLORMAPS, heatmap, normalize_map, overlay, save_npy, save_png

__all__ = ["COLORMAPS", "heatmap", "normalize_map", "overlay", "save_npy", "save_panels", "save_png"]
