"""Rendering saliency maps: overlays, heatmaps and figures (always written atomically)."""

from sipgrad.render.figure import save_panels
from sipgrad.render.overlay import (COLORMAPS, heatmap, normalize_map, overlay, overlay_blocks, save_npy,
                                   save_overlay_png, save_png)

__all__ = ["COLORMAPS", "heatmap", "normalize_map", "overlay", "overlay_blocks", "save_npy", "save_overlay_png",
           "save_panels", "save_png"]
