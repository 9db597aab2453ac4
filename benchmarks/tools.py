"""One pyramid build (or the read floor) per process: ``python tools.py TOOL IMAGE LEVELS``.

The harness (run.py) starts this script in a fresh process for every timed run and measures
the whole process (wall time and peak RSS), so each tool pays its own start-up and imports.
The script prints one JSON line with the time spent after the imports (``work_s``).

Every tool builds levels 1..LEVELS-1 of the OME-Zarr image at IMAGE by averaging 2x2 windows
in Y and X (level k from level k-1), with level 0's codec and chunks. This file runs both in
the main environment and in the seed's own environment (zarr 2), so each tool imports what
it needs inside its function.
"""

from __future__ import annotations

import json
import os
import sys
import time


def _level0_document(image: str) -> tuple[int, dict]:
    """Zarr format and the metadata document of level ``0``."""
    v2 = os.path.join(image, "0", ".zarray")
    if os.path.exists(v2):
        with open(v2) as f:
            return 2, json.load(f)
    with open(os.path.join(image, "0", "zarr.json")) as f:
        return 3, json.load(f)


def _yx_factors(ndim: int, k: int) -> list[int]:
    return [1] * (ndim - 2) + [2**k, 2**k]


def ours(image: str, levels: int) -> None:
    """napari-pyramids, through the public library function (defaults: threads, budget)."""
    from napari_pyramids import build_pyramid

    start = time.perf_counter()
    build_pyramid(zarrurl=image, num_levels=levels, coarsening_xy=2)
    _report(start)


def seed(image: str, levels: int) -> None:
    """fractal-tasks-core 1.4 ``build_pyramid`` (zarr 2, dask threads), level 0's chunks."""
    import logging

    from fractal_tasks_core.pyramids import build_pyramid

    logging.getLogger().setLevel(logging.WARNING)
    _, doc = _level0_document(image)
    start = time.perf_counter()
    build_pyramid(
        zarrurl=image, num_levels=levels, coarsening_xy=2, chunksize=tuple(doc["chunks"])
    )
    _report(start)


def _tensorstore_spec(image: str, path: str, zarr_format: int) -> dict:
    return {
        "driver": "zarr" if zarr_format == 2 else "zarr3",
        "kvstore": {"driver": "file", "path": os.path.join(image, path)},
    }


def _level_metadata(zarr_format: int, doc: dict, shape: list[int]) -> dict:
    """Level 0's metadata with a new shape and its chunks clipped to it (as ours does)."""
    meta = {k: v for k, v in doc.items() if k != "attributes"}
    meta["shape"] = shape
    if zarr_format == 2:
        meta["chunks"] = [min(c, n) for c, n in zip(doc["chunks"], shape, strict=True)]
    else:
        chunks = _chunk_shape(doc)
        meta["chunk_grid"] = {
            "name": "regular",
            "configuration": {
                "chunk_shape": [min(c, n) for c, n in zip(chunks, shape, strict=True)]
            },
        }
    return meta


def tensorstore(image: str, levels: int) -> None:
    """tensorstore's downsample driver (mean), level k from the stored level k-1."""
    import tensorstore as ts

    zarr_format, doc = _level0_document(image)
    start = time.perf_counter()
    for k in range(1, levels):
        source = ts.open(_tensorstore_spec(image, str(k - 1), zarr_format)).result()
        view = ts.downsample(source, _yx_factors(source.rank, 1), "mean")
        shape = [int(n) for n in view.shape]
        spec = _tensorstore_spec(image, str(k), zarr_format)
        spec["metadata"] = _level_metadata(zarr_format, doc, shape)
        spec["create"] = True
        target = ts.open(spec).result()
        target.write(view).result()
    _report(start)


def ngff_zarr(image: str, levels: int) -> None:
    """ngff-zarr's to_multiscales (DASK_BIN_SHRINK = window mean) written with start_level=1."""
    import ngff_zarr as nz

    zarr_format, doc = _level0_document(image)
    start = time.perf_counter()
    multiscales = nz.from_ngff_zarr(image)
    level0 = multiscales.images[0]
    dims = level0.dims
    chunks = dict(zip(dims, doc["chunks"] if zarr_format == 2 else _chunk_shape(doc), strict=True))
    factors = [{d: (2**k if d in "yx" else 1) for d in dims} for k in range(1, levels)]
    pyramid = nz.to_multiscales(
        level0, scale_factors=factors, method=nz.Methods.DASK_BIN_SHRINK, chunks=chunks
    )
    # ngff-zarr names levels scale<k>/<name>; keep the image's own 0, 1, 2, ...
    for k, dataset in enumerate(pyramid.metadata.datasets):
        dataset.path = str(k)
    if zarr_format == 2:
        from numcodecs import Blosc

        codec = {"compressor": Blosc(cname="lz4", clevel=5, shuffle=Blosc.SHUFFLE)}
        version = "0.4"
    else:
        import zarr

        codec = {"compressors": [zarr.codecs.ZstdCodec(level=3)]}
        version = "0.5"
    nz.to_ngff_zarr(image, pyramid, version=version, overwrite=False, start_level=1, **codec)
    _report(start)


def _chunk_shape(doc: dict) -> list[int]:
    return doc["chunk_grid"]["configuration"]["chunk_shape"]


def floor_tensorstore(image: str, levels: int) -> None:
    """Read floor: tensorstore reads and decodes every chunk of level 0 once.

    One read per chunk, a few in flight so tensorstore's thread pool always has a chunk to
    decode; nothing is kept after a chunk is read, so memory stays at a few chunks.
    """
    import tensorstore as ts

    zarr_format, _ = _level0_document(image)
    start = time.perf_counter()
    array = ts.open(_tensorstore_spec(image, "0", zarr_format)).result()
    chunks = array.chunk_layout.read_chunk.shape
    pending = []
    for region in _chunk_regions(array.shape, chunks):
        pending.append(array[region].read())
        if len(pending) >= 2 * len(os.sched_getaffinity(0)):
            pending.pop(0).result()
    for future in pending:
        future.result()
    _report(start)


def floor_zarr(image: str, levels: int) -> None:
    """Read floor with zarr-python 3: every chunk of level 0 once, on one thread per core."""
    from concurrent.futures import ThreadPoolExecutor

    import zarr

    start = time.perf_counter()
    array = zarr.open_array(os.path.join(image, "0"), mode="r")
    regions = _chunk_regions(array.shape, array.chunks)
    with ThreadPoolExecutor(len(os.sched_getaffinity(0))) as pool:
        for _ in pool.map(lambda region: array[region], regions):
            pass
    _report(start)


def _chunk_regions(shape, chunks) -> list[tuple[slice, ...]]:
    """The region of every chunk, in row-major order."""
    import itertools

    starts = [range(0, int(n), int(c)) for n, c in zip(shape, chunks, strict=True)]
    return [
        tuple(
            slice(s, min(s + int(c), int(n)))
            for s, c, n in zip(origin, chunks, shape, strict=True)
        )
        for origin in itertools.product(*starts)
    ]


def _report(start: float) -> None:
    print(json.dumps({"work_s": time.perf_counter() - start}), flush=True)


TOOLS = {
    "ours": ours,
    "seed": seed,
    "tensorstore": tensorstore,
    "ngff-zarr": ngff_zarr,
    "floor-tensorstore": floor_tensorstore,
    "floor-zarr": floor_zarr,
}

if __name__ == "__main__":
    tool, image, levels = sys.argv[1], sys.argv[2], int(sys.argv[3])
    TOOLS[tool](image, levels)
