"""Pictures of anomaly maps: fixed colour scales, drawing primitives, per-image figures, selection, the callback."""

from zsad.viz.callback import AnomalyMapPictures
from zsad.viz.overlay import colourise, compose_figure, heat_overlay, panel_row, picture_panel, save_panel
from zsad.viz.panels import f1_optimal_threshold, render_picture
from zsad.viz.pictures import picture_scales, save_pictures
from zsad.viz.scales import MapScale, documented_range
from zsad.viz.selection import PictureKeeper, select_pictures

__all__ = [
    "AnomalyMapPictures",
    "MapScale",
    "PictureKeeper",
    "colourise",
    "compose_figure",
    "documented_range",
    "f1_optimal_threshold",
    "heat_overlay",
    "panel_row",
    "picture_panel",
    "picture_scales",
    "render_picture",
    "save_panel",
    "save_pictures",
    "select_pictures",
]
