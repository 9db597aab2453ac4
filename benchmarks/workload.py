"""Synthetic microscopy-like OME-Zarr images (level 0 only) for the benchmark.

Each image is uint16 CZYX: channel 0 holds smooth nuclei-like blobs, channel 1 a
membrane-like network, both varying smoothly along Z, with Poisson (shot) noise on top. Such
data compresses like real fluorescence images do, unlike uniform random numbers.

Only numpy, scipy and zarr-python 3 are needed. The same planes are written once per format:
zarr v2 / NGFF 0.4 with blosc-lz4 (byte shuffle), zarr v3 / NGFF 0.5 with zstd, and zarr v3 /
NGFF 0.5 sharded (small inner chunks in large shards, as converters write NGFF 0.5 today)
with blosc-lz4.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SIZES = {"256MiB": 2048, "1GiB": 4096, "4GiB": 8192}
CHANNELS = 2
DEPTH = 16
CHUNKS_YX = 1024
# The sharded format: inner chunks of this size in shards of CHUNKS_YX.
INNER_CHUNKS_YX = 256
FORMATS = ("v2-blosc-lz4", "v3-zstd", "v3-sharded-blosc-lz4")
# Structures are drawn on a grid this many times coarser than level 0, then interpolated.
_COARSE = 8


@dataclass(frozen=True)
class Workload:
    """One benchmark image: its size label, on-disk format and shape."""

    size: str
    fmt: str

    @property
    def shape(self) -> tuple[int, int, int, int]:
        n = SIZES[self.size]
        return (CHANNELS, DEPTH, n, n)

    @property
    def chunks(self) -> tuple[int, int, int, int]:
        """The chunk shape: the inner chunks of a sharded format."""
        n = min(INNER_CHUNKS_YX if self.sharded else CHUNKS_YX, SIZES[self.size])
        return (1, 1, n, n)

    @property
    def shards(self) -> tuple[int, int, int, int] | None:
        if not self.sharded:
            return None
        n = min(CHUNKS_YX, SIZES[self.size])
        return (1, 1, n, n)

    @property
    def sharded(self) -> bool:
        return "sharded" in self.fmt

    @property
    def zarr_format(self) -> int:
        return 2 if self.fmt.startswith("v2") else 3

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * 2

    @property
    def name(self) -> str:
        return f"{self.size}-{self.fmt}"


def _smooth_volume(rng: np.random.Generator, channel: int, shape: tuple[int, int, int]):
    """A smooth low-resolution float32 volume (Z, Y/8, X/8) of expected photon counts."""
    from scipy import ndimage

    depth, ny, nx = shape
    if channel == 0:
        # Nuclei: sparse seeds blurred into blobs ~40 px wide at level 0, 1400 counts high.
        sigma = (1.5, 2.5, 2.5)
        seeds = (rng.random(shape, dtype=np.float32) > 0.9997).astype(np.float32)
        blobs = ndimage.gaussian_filter(seeds, sigma=sigma)
        blobs *= 1400.0 * (2 * np.pi) ** 1.5 * float(np.prod(sigma))
        return 100.0 + blobs
    # Membranes: a randomly warped mesh of thin bright lines over a dim background.
    zz, yy, xx = np.meshgrid(
        np.arange(depth, dtype=np.float32),
        np.arange(ny, dtype=np.float32),
        np.arange(nx, dtype=np.float32),
        indexing="ij",
    )
    phase = rng.uniform(0, 2 * np.pi, size=4).astype(np.float32)
    u = xx / 7.0 + 1.5 * np.sin(yy / 23.0 + phase[0] + zz / 9.0) + phase[1]
    v = yy / 7.0 + 1.5 * np.sin(xx / 19.0 + phase[2] - zz / 11.0) + phase[3]
    mesh = np.exp(-(np.sin(u) ** 2) / 0.02) + np.exp(-(np.sin(v) ** 2) / 0.02)
    return 150.0 + 700.0 * np.minimum(mesh, 1.0)


def planes(workload: Workload, seed: int = 0):
    """Yield ``(c, z, plane)`` with each uint16 YX plane of the image, in order."""
    from scipy import ndimage

    _, depth, ny, nx = workload.shape
    rng = np.random.default_rng(seed)
    coarse = (depth, ny // _COARSE, nx // _COARSE)
    for c in range(CHANNELS):
        volume = _smooth_volume(rng, c, coarse)
        for z in range(depth):
            expected = ndimage.zoom(volume[z], _COARSE, order=1, grid_mode=True, mode="nearest")
            yield c, z, rng.poisson(expected).astype(np.uint16)


def _ngff_attrs(workload: Workload) -> dict:
    axes = [
        {"name": "c", "type": "channel"},
        {"name": "z", "type": "space", "unit": "micrometer"},
        {"name": "y", "type": "space", "unit": "micrometer"},
        {"name": "x", "type": "space", "unit": "micrometer"},
    ]
    multiscale = {
        "name": workload.name,
        "axes": axes,
        "datasets": [
            {
                "path": "0",
                "coordinateTransformations": [
                    {"type": "scale", "scale": [1.0, 1.0, 0.325, 0.325]}
                ],
            }
        ],
    }
    if workload.zarr_format == 2:
        return {"multiscales": [{"version": "0.4", **multiscale}]}
    return {"ome": {"version": "0.5", "multiscales": [multiscale]}}


def create_image(workload: Workload, path: Path):
    """Create the empty image group and its level-0 array; return the zarr array."""
    import zarr

    group = zarr.open_group(path, mode="w-", zarr_format=workload.zarr_format)
    kwargs: dict = {}
    if workload.zarr_format == 2:
        from numcodecs import Blosc

        kwargs["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
        kwargs["compressors"] = Blosc(cname="lz4", clevel=5, shuffle=Blosc.SHUFFLE)
    elif workload.sharded:
        kwargs["dimension_names"] = ["c", "z", "y", "x"]
        kwargs["compressors"] = zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")
    else:
        kwargs["dimension_names"] = ["c", "z", "y", "x"]
        kwargs["compressors"] = zarr.codecs.ZstdCodec(level=3)
    array = group.create_array(
        "0",
        shape=workload.shape,
        chunks=workload.chunks,
        shards=workload.shards,
        dtype="uint16",
        fill_value=0,
        **kwargs,
    )
    group.attrs.update(_ngff_attrs(workload))
    return array


def generate(workloads: list[Workload], folder: Path, log=print) -> dict[str, Path]:
    """Write each missing image under ``folder``; sizes sharing planes are written together."""
    paths = {w.name: folder / f"{w.name}.ome.zarr" for w in workloads}
    for size in dict.fromkeys(w.size for w in workloads):
        todo = [w for w in workloads if w.size == size and not _complete(paths[w.name])]
        if not todo:
            continue
        log(f"generating {', '.join(w.name for w in todo)} (not timed)")
        arrays = []
        for w in todo:
            shutil.rmtree(paths[w.name], ignore_errors=True)
            arrays.append(create_image(w, paths[w.name]))
        for c, z, plane in planes(todo[0]):
            for array in arrays:
                array[c, z] = plane
        for w in todo:
            (paths[w.name] / ".complete").write_text(json.dumps({"shape": w.shape}))
    return paths


def _complete(path: Path) -> bool:
    return (path / ".complete").exists()
