"""File > Open Sample: the sample's chunks written in a napari thread worker, its layers
refreshed as planes land, so the menu returns at once.

The sample's layers show level 0 from memory the writer fills as it goes: napari slices a
layer on its own thread each time it is added or refreshed, and slicing a plane in memory
costs a view where reading it back from disk cost ~0.1 s a layer, several times over.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import napari
import numpy as np
from napari.qt.threading import create_worker

from ..layers import CHANNEL_KEY, PATH_KEY, layer_data
from ..sample_data import CHANNELS, DEPTH, begin_sample
from .idle import collect_when_idle

# Up to this size (4 x 4096² uint16 a channel, 256 MiB in all) the sample's layers hold level
# 0 in memory; a larger one is read back from disk as it lands.
IN_MEMORY_SIZE = 4096

# Workers still running, kept from garbage collection until they finish.
_RUNNING: set[object] = set()


def write_in_background(path: Path, planes: Iterator[tuple[int, int]]) -> Any:
    """Run ``planes`` (a sample's chunk writer) off the UI thread; refresh its layers.

    Returns the started thread worker (``finished`` once the sample is whole on disk)."""
    worker = create_worker(lambda: (yield from planes), _start_thread=False)
    worker.yielded.connect(lambda plane: _refresh_layers(path, plane))
    worker.finished.connect(lambda: _RUNNING.discard(worker))
    worker.finished.connect(lambda: _refresh_layers(path, None))
    worker.finished.connect(collect_when_idle)  # the sample's layers and chunks made many
    _RUNNING.add(worker)
    worker.start()
    return worker


def _refresh_layers(path: Path, plane: tuple[int, int] | None) -> None:
    """Read again the layers that show ``plane`` (channel, z), just landed; None: every
    layer of the sample, now whole on disk.

    The layers get new dask arrays of the same levels: napari's dask cache keeps the chunks
    it read before they were written (empty) under the old arrays' keys. A plane that is not
    on show is not read now (each read is the layer's whole slice on napari's thread); the
    end brings the planes read before they landed up to date. Layers holding level 0 in
    memory (the sample's own, filled by the writer) are only sliced again.
    """
    viewer = napari.current_viewer()
    if viewer is None:
        return
    fresh = None
    for layer in viewer.layers:
        metadata = layer.metadata
        if metadata.get(PATH_KEY) != str(path):
            continue
        if plane is not None and not (
            metadata.get(CHANNEL_KEY) == plane[0] and _shows_plane(viewer, layer, plane[1])
        ):
            continue
        if isinstance(layer.data, np.ndarray):  # the writer fills it in place
            layer.refresh()
            continue
        fresh = layer_data(path) if fresh is None else fresh
        for data, kwargs, _ in fresh:
            if kwargs["metadata"].get(CHANNEL_KEY) == metadata.get(CHANNEL_KEY):
                layer.data = data
                break


def _shows_plane(viewer: napari.Viewer, layer: napari.layers.Layer, z: int) -> bool:
    """Whether ``layer`` (Z, Y, X) shows plane ``z``: it is displayed in 3D, or sliced there."""
    world_axis = viewer.dims.ndim - layer.ndim  # layers are aligned on their last axes
    if world_axis < 0 or world_axis in viewer.dims.displayed:
        return True
    at = layer.world_to_data(viewer.dims.point)[0]
    return round(float(at)) == z


def sample_data(size: int = 2048, zarr_format: int = 2) -> list:
    """npe2 sample: the sample image in a temporary folder, read back as layers at once.

    The metadata is written now and the chunks in a thread (seconds for 2048²), so napari
    does not wait. The layers hold level 0 in memory, which the thread fills as it writes
    each chunk (zeros until then; 32 MiB a channel at 2048²); those showing a plane are drawn
    again when it lands, all of them at the end. Their metadata names the image group, as
    our reader's does, so the Pyramid Builder lists and builds it in place (a build waits
    for the last chunk, and shows the built levels from disk). The folder is removed when
    Python exits.
    """
    import atexit
    import shutil

    folder = Path(tempfile.mkdtemp(prefix="napari-pyramids-sample-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = folder / "sample.ome.zarr"
    level0 = None
    if size <= IN_MEMORY_SIZE:  # larger, the copy would outweigh the stall it saves
        level0 = np.zeros((len(CHANNELS), DEPTH, size, size), dtype=np.uint16)
    planes = begin_sample(path, zarr_format=zarr_format, size=size, into=level0)
    layers = layer_data(path)
    if level0 is not None:
        layers = [
            (level0[kwargs["metadata"][CHANNEL_KEY]], kwargs, kind) for _, kwargs, kind in layers
        ]
    write_in_background(path, planes)
    return layers


def sample_data_v3(size: int = 2048) -> list:
    """npe2 sample: the same image as zarr v3 / NGFF 0.5."""
    return sample_data(size=size, zarr_format=3)
