"""GUI fixtures: a real napari viewer (xvfb-run) with the Pyramid Builder docked."""

from __future__ import annotations

import pytest

from gates import GatedExecutor
from napari_pyramids._napari.sample_data import write_sample_image


@pytest.fixture
def sample_path(tmp_path):
    """The two-channel sample (2 x 4 x 512 x 512 uint16, level 0 only, NGFF 0.4)."""
    return write_sample_image(tmp_path / "sample.ome.zarr", size=512, depth=4)


@pytest.fixture
def viewer_and_builder(make_napari_viewer):
    """A viewer with the widget docked through the plugin's manifest, as a user gets it."""
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-pyramids", "Pyramid Builder")
    return viewer, widget


@pytest.fixture
def gated_executor():
    executor = GatedExecutor()
    yield executor
    executor.gate.set()
    executor.shutdown(wait=True)
