"""GUI fixtures: a real napari viewer (xvfb-run) with the Pyramid Builder docked."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

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


class GatedExecutor(ThreadPoolExecutor):
    """Runs the first ``free`` blocks, then holds every other block until ``gate`` is set.

    ``held`` is set when a block starts waiting: the build is then mid-way, with blocks
    written and others pending, whatever the machine's speed.
    """

    def __init__(self, free: int = 1) -> None:
        super().__init__(max_workers=2)
        self.free = free
        self.gate = threading.Event()
        self.held = threading.Event()
        self._submitted = 0
        self._lock = threading.Lock()

    def submit(self, fn, /, *args, **kwargs):
        with self._lock:
            index = self._submitted
            self._submitted += 1

        def run():
            if index >= self.free:
                self.held.set()
                self.gate.wait()
            return fn(*args, **kwargs)

        return super().submit(run)


@pytest.fixture
def gated_executor():
    executor = GatedExecutor()
    yield executor
    executor.gate.set()
    executor.shutdown(wait=True)
