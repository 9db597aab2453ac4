"""``napari-pyramids gui``: napari with the Pyramid Builder docked and an image loaded."""

from __future__ import annotations

import os
from typing import Any


def open_viewer(path: str | os.PathLike[str] | None = None, *, run: bool = True) -> Any:
    """Open napari with the widget docked and ``path`` (default: the sample image) loaded.

    Returns the viewer (after the event loop ends when ``run`` is True).
    """
    import napari

    viewer = napari.Viewer(title="napari-pyramids")
    viewer.window.add_plugin_dock_widget("napari-pyramids", "Pyramid Builder")
    if path is None:
        viewer.open_sample("napari-pyramids", "sample")
    else:
        viewer.open(os.fspath(path), plugin="napari-pyramids")
    if run:
        napari.run()
    return viewer
