"""Pictures of anomaly maps: drawing primitives, per-image figures, which images to keep, and the test callback."""

from zsad.viz.callback import AnomalyMapPictures
from zsad.viz.overlay import heat_overlay, panel_row, picture_panel, save_panel
from zsad.viz.panels import f1_optimal_threshold, render_picture
from zsad.viz.pictures import save_pictures
from zsad.viz.selection import PictureKeeper, select_pictures

__all__ = [
    "AnomalyMapPictures",
    "PictureKeeper",
    "f1_optimal_threshold",
    "heat_overlay",
    "panel_row",
    "picture_panel",
    "render_picture",
    "save_panel",
    "save_pictures",
    "select_pictures",
]
