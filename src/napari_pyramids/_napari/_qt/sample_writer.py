"""File > Open Sample: the sample's chunks written in a napari thread worker, its layers
refreshed as planes land, so the menu returns at once."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import napari
from napari.qt.threading import create_worker

from ..layers import PATH_KEY, layer_data
from ..sample_data import begin_sample

# Workers still running, kept from garbage collection until they finish.
_RUNNING: set[object] = set()


def write_in_background(path: Path, planes: Iterator[tuple[int, int]]) -> None:
    """Run ``planes`` (a sample's chunk writer) off the UI thread; refresh its layers."""
    worker = create_worker(lambda: (yield from planes), _start_thread=False)
    worker.yielded.connect(lambda _: _refresh_layers(path))
    worker.finished.connect(lambda: _RUNNING.discard(worker))
    worker.finished.connect(lambda: _refresh_layers(path))
    _RUNNING.add(worker)
    worker.start()


def _refresh_layers(path: Path) -> None:
    """Read the sample's layers again from disk (new chunks landed)."""
    viewer = napari.current_viewer()
    if viewer is None:
        return
    for layer in viewer.layers:
        if layer.metadata.get(PATH_KEY) == str(path):
            layer.refresh()


def sample_data(size: int = 2048, zarr_format: int = 2) -> list:
    """npe2 sample: the sample image in a temporary folder, read back as layers at once.

    The metadata is written now and the chunks in a thread (seconds for 2048²), so napari
    does not wait; the layers are refreshed as planes land. Their metadata names the image
    group, as our reader's does, so the Pyramid Builder lists and builds it in place (a
    build waits for the last chunk). The folder is removed when Python exits.
    """
    import atexit
    import shutil

    folder = Path(tempfile.mkdtemp(prefix="napari-pyramids-sample-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = folder / "sample.ome.zarr"
    write_in_background(path, begin_sample(path, zarr_format=zarr_format, size=size))
    return layer_data(path)


def sample_data_v3(size: int = 2048) -> list:
    """npe2 sample: the same image as zarr v3 / NGFF 0.5."""
    return sample_data(size=size, zarr_format=3)
