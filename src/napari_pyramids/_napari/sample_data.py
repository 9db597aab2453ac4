"""Sample data: a synthetic two-channel OME-Zarr image with level 0 only, written to disk.

The image looks like fluorescence microscopy (smooth nuclei and a membrane-like network with
shot noise), so mean, median and mode give visibly different pyramids.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import zarr

CHANNELS = (("nuclei", "00FFFF"), ("membranes", "FF00FF"))


def sample_planes(size: int, depth: int, seed: int = 0) -> np.ndarray:
    """CZYX uint16 planes with smooth structures and shot noise.

    Cheap enough for File > Open Sample: each nucleus is a separable Gaussian added only
    over the square it covers, and the shot noise is its normal approximation.
    """
    rng = np.random.default_rng(seed)
    axis = np.arange(size, dtype=np.float32) / size
    data = np.empty((len(CHANNELS), depth, size, size), dtype=np.uint16)
    centres = rng.random((40, 2), dtype=np.float32)
    radii = rng.uniform(0.02, 0.06, size=40).astype(np.float32)
    for z in range(depth):
        phase = z / max(depth, 1)
        nuclei = np.full((size, size), 100.0, dtype=np.float32)
        for (cy, cx), r in zip(centres, radii, strict=True):
            cx = cx + 0.02 * phase
            ys = slice(max(0, int((cy - 4 * r) * size)), min(size, int((cy + 4 * r) * size) + 1))
            xs = slice(max(0, int((cx - 4 * r) * size)), min(size, int((cx + 4 * r) * size) + 1))
            gy = np.exp(-((axis[ys] - cy) ** 2) / (2 * r * r))
            gx = np.exp(-((axis[xs] - cx) ** 2) / (2 * r * r))
            nuclei[ys, xs] += 1500.0 * np.outer(gy, gx)
        wave_x = np.sin(25 * axis + 3 * phase)
        wave_y = np.cos(19 * axis - 2 * phase)
        membranes = np.where(np.abs(np.outer(wave_y, wave_x)) > 0.92, 1050.0, 150.0)
        for channel, mean in enumerate((nuclei, membranes.astype(np.float32))):
            noise = rng.standard_normal((size, size), dtype=np.float32)
            noise *= np.sqrt(mean)
            noise += mean
            np.clip(np.rint(noise, out=noise), 0, 65535, out=noise)
            data[channel, z] = noise
    return data


def write_sample_image(
    path: str | os.PathLike[str], *, zarr_format: int = 2, size: int = 2048, depth: int = 4
) -> Path:
    """Write the sample image (level 0 only, NGFF 0.4 or 0.5) and return its path."""
    path = Path(path)
    data = sample_planes(size, depth)
    group = zarr.open_group(path, mode="w-", zarr_format=zarr_format)
    extra = {"dimension_names": ["c", "z", "y", "x"]} if zarr_format == 3 else {}
    if zarr_format == 2:
        extra["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
    array = group.create_array(
        "0", shape=data.shape, chunks=(1, 1, 512, 512), dtype=data.dtype, **extra
    )
    array[:] = data
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
    return path


def temporary_sample_image(zarr_format: int = 2, size: int = 2048) -> Path:
    """Write the sample image into a new temporary folder."""
    folder = Path(tempfile.mkdtemp(prefix="napari-pyramids-sample-"))
    return write_sample_image(folder / "sample.ome.zarr", zarr_format=zarr_format, size=size)


def sample_data(size: int = 2048, zarr_format: int = 2) -> list:
    """npe2 sample: write the sample image to a temporary folder and read it back as layers.

    Reading it back through our reader gives layers whose metadata names the image group,
    so the Pyramid Builder can build it in place. The folder is removed when Python exits.
    """
    import atexit
    import shutil

    from .layers import layer_data

    path = temporary_sample_image(zarr_format=zarr_format, size=size)
    atexit.register(shutil.rmtree, path.parent, ignore_errors=True)
    return layer_data(path)


def sample_data_v3(size: int = 2048) -> list:
    """npe2 sample: the same image as zarr v3 / NGFF 0.5."""
    return sample_data(size=size, zarr_format=3)
