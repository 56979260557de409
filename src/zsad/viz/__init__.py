"""Pictures of anomaly maps."""

from zsad.viz.overlay import heat_overlay, picture_panel, save_panel
from zsad.viz.pictures import save_pictures

__all__ = ["heat_overlay", "picture_panel", "save_panel", "save_pictures"]
