"""Sample data: a synthetic two-channel OME-Zarr image with level 0 only, written to disk.

The image looks like fluorescence microscopy (smooth nuclei and a membrane-like network with
shot noise), so mean, median and mode give visibly different pyramids.
"""

from __future__ import annotations

import functools
import os
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import zarr

CHANNELS = (("nuclei", "00FFFF"), ("membranes", "FF00FF"))
# Level 0's chunks (Y and X), written and computed one at a time.
CHUNK = 512
# Samples whose chunks a thread is writing: their path -> (done, level 0 computed lazily).
_WRITING: dict[Path, tuple[threading.Event, Any]] = {}

# Z planes of the sample.
DEPTH = 4


def sample_planes(size: int, depth: int, seed: int = 0) -> np.ndarray:
    """CZYX uint16 planes with smooth structures and shot noise, chunk by chunk."""
    data = np.empty((len(CHANNELS), depth, size, size), dtype=np.uint16)
    for index in _chunk_indices(size, depth):
        data[_chunk_region(index, size)] = sample_chunk(index, size, depth, seed)
    return data


def sample_chunk(
    index: tuple[int, int, int, int], size: int, depth: int, seed: int = 0
) -> np.ndarray:
    """The (1, 1, y, x) chunk at chunk ``index`` (c, z, y, x) of the sample's level 0.

    Each chunk depends only on its index and the seed, so chunks are computed in any order,
    on any thread, and the whole image is the same however it was cut. Cheap enough for
    File > Open Sample: each nucleus is a separable Gaussian added only over the part of the
    chunk it covers, and the shot noise is its normal approximation.
    """
    channel, z, cy, cx = index
    ys = slice(cy * CHUNK, min(size, (cy + 1) * CHUNK))
    xs = slice(cx * CHUNK, min(size, (cx + 1) * CHUNK))
    axis = np.arange(size, dtype=np.float32) / size
    phase = z / max(depth, 1)
    if channel == 0:
        rng = np.random.default_rng(seed)
        centres = rng.random((40, 2), dtype=np.float32)
        radii = rng.uniform(0.02, 0.06, size=40).astype(np.float32)
        mean = np.full((ys.stop - ys.start, xs.stop - xs.start), 100.0, dtype=np.float32)
        for (y0, x0), r in zip(centres, radii, strict=True):
            x0 = x0 + 0.02 * phase
            a = max(ys.start, int((y0 - 4 * r) * size))
            b = min(ys.stop, int((y0 + 4 * r) * size) + 1)
            c = max(xs.start, int((x0 - 4 * r) * size))
            d = min(xs.stop, int((x0 + 4 * r) * size) + 1)
            if a >= b or c >= d:
                continue
            gy = np.exp(-((axis[a:b] - y0) ** 2) / (2 * r * r))
            gx = np.exp(-((axis[c:d] - x0) ** 2) / (2 * r * r))
            mean[a - ys.start : b - ys.start, c - xs.start : d - xs.start] += 1500.0 * np.outer(
                gy, gx
            )
    else:
        wave_x = np.sin(25 * axis[xs] + 3 * phase)
        wave_y = np.cos(19 * axis[ys] - 2 * phase)
        mean = np.where(np.abs(np.outer(wave_y, wave_x)) > 0.92, 1050.0, 150.0).astype(np.float32)
    noise = np.random.default_rng([seed, channel, z, cy, cx]).standard_normal(
        mean.shape, dtype=np.float32
    )
    noise *= np.sqrt(mean)
    noise += mean
    np.clip(np.rint(noise, out=noise), 0, 65535, out=noise)
    return noise.astype(np.uint16)[None, None]


def _chunk_indices(size: int, depth: int) -> list[tuple[int, int, int, int]]:
    """Level 0's chunks, plane by plane (the planes napari shows first come first)."""
    n = -(-size // CHUNK)
    # napari opens a stack at plane (depth - 1) // 2.
    order = sorted(range(depth), key=lambda z: abs(z - (depth - 1) // 2))
    planes = [(c, z) for z in order for c in range(len(CHANNELS))]
    return [(c, z, y, x) for c, z in planes for y in range(n) for x in range(n)]


def _chunk_region(index: tuple[int, int, int, int], size: int) -> tuple[Any, ...]:
    channel, z, cy, cx = index
    return (
        slice(channel, channel + 1),
        slice(z, z + 1),
        slice(cy * CHUNK, min(size, (cy + 1) * CHUNK)),
        slice(cx * CHUNK, min(size, (cx + 1) * CHUNK)),
    )


def lazy_sample(size: int, depth: int, seed: int = 0) -> Any:
    """The sample's level 0 as a dask array computed chunk by chunk, as it is drawn."""
    import dask.array as da

    def block(block_info: Any = None) -> np.ndarray:
        (c, _), (z, _), (y, _), (x, _) = block_info[None]["array-location"]
        return sample_chunk((c, z, y // CHUNK, x // CHUNK), size, depth, seed)

    n = -(-size // CHUNK)
    yx = tuple(min(CHUNK, size - i * CHUNK) for i in range(n))
    chunks = ((1,) * len(CHANNELS), (1,) * depth, yx, yx)
    # A name of its own: napari's dask cache fails when two threads compute one key at once.
    name = f"napari-pyramids-sample-{uuid.uuid4().hex}"
    meta = np.empty((0,) * 4, np.uint16)
    return da.map_blocks(block, chunks=chunks, dtype=np.uint16, meta=meta, name=name)


def write_sample_image(
    path: str | os.PathLike[str], *, zarr_format: int = 2, size: int = 2048, depth: int = DEPTH
) -> Path:
    """Write the sample image (level 0 only, NGFF 0.4 or 0.5) and return its path."""
    path = Path(path)
    array = _create_sample(path, zarr_format, size, depth)
    for index in _chunk_indices(size, depth):
        array[_chunk_region(index, size)] = sample_chunk(index, size, depth)
    return path


def _create_sample(path: Path, zarr_format: int, size: int, depth: int) -> Any:
    """The sample's group, metadata and empty level 0 array (no chunk written yet)."""
    group = zarr.open_group(path, mode="w-", zarr_format=zarr_format)
    extra = {"dimension_names": ["c", "z", "y", "x"]} if zarr_format == 3 else {}
    if zarr_format == 2:
        extra["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
    array = group.create_array(
        "0",
        shape=(len(CHANNELS), depth, size, size),
        chunks=(1, 1, CHUNK, CHUNK),
        dtype=np.uint16,
        **extra,
    )
    axes = [
        {"name": "c", "type": "channel"},
        {"name": "z", "type": "space", "unit": "micrometer"},
        {"name": "y", "type": "space", "unit": "micrometer"},
        {"name": "x", "type": "space", "unit": "micrometer"},
    ]
    multiscale = {
        "name": "sample",
        "axes": axes,
        "datasets": [
            {
                "path": "0",
                "coordinateTransformations": [{"type": "scale", "scale": [1.0, 2.0, 0.5, 0.5]}],
            }
        ],
    }
    omero = {
        "channels": [
            {
                "label": label,
                "color": color,
                "active": True,
                "window": {"start": 0, "end": 2000, "min": 0, "max": 65535},
            }
            for label, color in CHANNELS
        ]
    }
    if zarr_format == 2:
        group.attrs.update({"multiscales": [{"version": "0.4", **multiscale}], "omero": omero})
    else:
        group.attrs.update(
            {"ome": {"version": "0.5", "multiscales": [multiscale], "omero": omero}}
        )
    return array


def begin_sample(
    path: str | os.PathLike[str],
    *,
    zarr_format: int = 2,
    size: int = 2048,
    depth: int = DEPTH,
    into: np.ndarray | None = None,
) -> Iterator[tuple[int, int]]:
    """Write the sample's metadata and empty level 0 now; return a generator writing its chunks.

    The generator yields (channel, z) after each plane, the plane napari shows first first.
    Until it has ended, :func:`sample_level0` gives level 0 computed lazily (the same values)
    for ``path`` and :func:`wait_for_sample` blocks. ``into`` (C, Z, Y, X), if given, gets
    each chunk too, before it is written to disk.
    """
    path = Path(path)
    array = _create_sample(path, zarr_format, size, depth)
    done = threading.Event()
    _WRITING[path] = (done, functools.partial(lazy_sample, size, depth))

    def write() -> Iterator[tuple[int, int]]:
        try:
            for index in _chunk_indices(size, depth):
                chunk = sample_chunk(index, size, depth)
                if into is not None:
                    into[_chunk_region(index, size)] = chunk
                array[_chunk_region(index, size)] = chunk
                if index[2:] == (-(-size // CHUNK) - 1,) * 2:
                    yield index[:2]
        finally:
            _WRITING.pop(path, None)
            done.set()

    return write()


def sample_level0(root: str | os.PathLike[str]) -> Any | None:
    """The lazily computed level 0 of a sample still being written at ``root``, else None.

    Each call gives a new dask array (keys of its own)."""
    entry = _WRITING.get(Path(root))
    return None if entry is None else entry[1]()


def wait_for_sample(root: str | os.PathLike[str], timeout: float | None = None) -> bool:
    """Wait until a sample being written at ``root`` is whole on disk (True for any other path)."""
    entry = _WRITING.get(Path(root))
    return True if entry is None else entry[0].wait(timeout)


def temporary_sample_image(zarr_format: int = 2, size: int = 2048) -> Path:
    """Write the sample image into a new temporary folder."""
    folder = Path(tempfile.mkdtemp(prefix="napari-pyramids-sample-"))
    return write_sample_image(folder / "sample.ome.zarr", zarr_format=zarr_format, size=size)
