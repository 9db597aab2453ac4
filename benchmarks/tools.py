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
    """Level 0's metadata with a new shape and its chunks (shards) clipped to it, as ours does."""
    meta = {k: v for k, v in doc.items() if k != "attributes"}
    meta["shape"] = shape
    chunks, shards = _level_layout(zarr_format, doc, shape)
    if zarr_format == 2:
        meta["chunks"] = chunks
        return meta
    meta["chunk_grid"] = {"name": "regular", "configuration": {"chunk_shape": shards or chunks}}
    if shards is not None:
        sharding = dict(meta["codecs"][0])
        sharding["configuration"] = {**sharding["configuration"], "chunk_shape": chunks}
        meta["codecs"] = [sharding, *meta["codecs"][1:]]
    return meta


def _level_layout(zarr_format: int, doc: dict, shape: list[int]) -> tuple[list, list | None]:
    """Chunks and shards (None: unsharded) of a level: level 0's, clipped to ``shape``.

    A shard stays a whole number of chunks and covers no more chunks than the level has.
    """
    if zarr_format == 2:
        return [min(c, n) for c, n in zip(doc["chunks"], shape, strict=True)], None
    outer = _chunk_shape(doc)
    inner = _inner_chunk_shape(doc)
    chunks = [max(1, min(c, n)) for c, n in zip(inner or outer, shape, strict=True)]
    if inner is None:
        return chunks, None
    shards = [
        min(max(c, s // c * c), -(-n // c) * c)
        for s, c, n in zip(outer, chunks, shape, strict=True)
    ]
    return chunks, shards


def _inner_chunk_shape(doc: dict) -> list[int] | None:
    """The inner chunk shape of a sharded zarr v3 array, None if it is not sharded."""
    codecs = doc.get("codecs") or []
    if codecs and codecs[0].get("name") == "sharding_indexed":
        return list(codecs[0]["configuration"]["chunk_shape"])
    return None


def _write_metadata(image: str, path: str, zarr_format: int, meta: dict) -> None:
    """Create an empty array from its metadata document (no chunk is written)."""
    os.makedirs(os.path.join(image, path))
    name = ".zarray" if zarr_format == 2 else "zarr.json"
    with open(os.path.join(image, path, name), "w") as f:
        json.dump(meta, f)


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
    import zarr

    zarr_format, doc = _level0_document(image)
    start = time.perf_counter()
    multiscales = nz.from_ngff_zarr(image)
    level0 = multiscales.images[0]
    dims = level0.dims
    outer = doc["chunks"] if zarr_format == 2 else _chunk_shape(doc)
    inner = None if zarr_format == 2 else _inner_chunk_shape(doc)
    chunks = dict(zip(dims, inner or outer, strict=True))
    factors = [{d: (2**k if d in "yx" else 1) for d in dims} for k in range(1, levels)]
    pyramid = nz.to_multiscales(
        level0, scale_factors=factors, method=nz.Methods.DASK_BIN_SHRINK, chunks=chunks
    )
    # ngff-zarr names levels scale<k>/<name>; keep the image's own 0, 1, 2, ...
    for k, dataset in enumerate(pyramid.metadata.datasets):
        dataset.path = str(k)
    compressors = zarr.open_array(os.path.join(image, "0"), mode="r").compressors
    if zarr_format == 2:
        options = {"compressor": compressors[0], "version": "0.4"}
    else:
        options = {"compressors": list(compressors), "version": "0.5"}
    if inner is not None:
        options["chunks_per_shard"] = {
            d: s // c for d, s, c in zip(dims, outer, inner, strict=True)
        }
    nz.to_ngff_zarr(image, pyramid, overwrite=False, start_level=1, **options)
    _report(start)


def ome_zarr_pyramid(image: str, levels: int) -> None:
    """ome-zarr-pyramid: levels 1.. of a mean downscale plan, written into the image.

    ``downscale(defer=False)`` makes every coarser level a lazy ``ts.downsample`` mean of
    level 0 (its window methods do not cascade); ``write_pyramid(..., layers=[...])``
    writes only those levels into the existing group, with level 0's codec and (given
    explicitly: ozp picks its own otherwise) chunks and shards, and rewrites the
    multiscales metadata.
    """
    from ome_zarr_pyramid import io

    zarr_format, doc = _level0_document(image)
    chunks, shards = _level_layout(zarr_format, doc, doc["shape"])
    layout = {"chunk_shape": tuple(chunks)}
    if shards is not None:
        layout["shard_coefficients"] = tuple(s // c for s, c in zip(shards, chunks, strict=True))
    start = time.perf_counter()
    pyramid = io.read_pyramid(image)
    full = pyramid.downscale(
        n_layers=levels,
        scale_factor=_yx_factors(len(doc["shape"]), 1),
        downscale_method="mean",
        defer=False,
    )
    paths = [str(p) for p in full.meta.resolution_paths]
    io.write_pyramid(full, image, layers=paths[1:], overwrite=False, **layout)
    _report(start)


def ngio(image: str, levels: int) -> None:
    """ngio 1.1: the image's pyramid consolidated from level 0 (``Image.consolidate``).

    ngio fills the levels an image declares but has no call that adds levels to an
    image, so empty levels 1.. are declared first, as ours plans them (level 0's
    metadata, chunks and shards clipped; the multiscales list extended). ``consolidate``
    then builds level k from the stored level k-1 with its default ``mode="dask"``
    (named here only to silence its notice that the default changes in 1.2): a linear
    ``scipy.ndimage.zoom`` by 1/2 per dask block, which for a factor of 2 is the 2x2 mean.
    """
    import ngio as ng

    start = time.perf_counter()
    _declare_levels(image, levels)
    ng.open_ome_zarr_container(image).get_image(path="0").consolidate(mode="dask")
    _report(start)


def _declare_levels(image: str, levels: int) -> None:
    """Empty arrays 1..levels-1 with level 0's metadata, listed in the multiscales."""
    import zarr

    zarr_format, doc = _level0_document(image)
    shape = list(doc["shape"])
    for k in range(1, levels):
        shape = shape[:-2] + [n // 2 for n in shape[-2:]]
        _write_metadata(image, str(k), zarr_format, _level_metadata(zarr_format, doc, shape))
    group = zarr.open_group(image, mode="r+")
    attrs = group.attrs.asdict()
    multiscale = (attrs["ome"] if zarr_format == 3 else attrs)["multiscales"][0]
    base = multiscale["datasets"][0]
    datasets = [base]
    for k in range(1, levels):
        transforms = []
        for t in base["coordinateTransformations"]:
            t = dict(t)
            if t["type"] == "scale":
                t["scale"] = [*t["scale"][:-2], *(v * 2**k for v in t["scale"][-2:])]
            transforms.append(t)
        datasets.append({"path": str(k), "coordinateTransformations": transforms})
    multiscale["datasets"] = datasets
    group.attrs.update(attrs)


def zarrs_naive(image: str, levels: int) -> None:
    """zarr-python with the zarrs codec pipeline, level by level, one plane at a time.

    Level k is the 2x2 mean of the stored level k-1 (rounded half to even, as ours),
    written into an array with level 0's codecs, chunks and shards. The zarrs pipeline
    (Rust) decodes and encodes the chunks of a plane in parallel; the rest is numpy.
    """
    import numpy as np
    import zarr

    zarr.config.set({"codec_pipeline.path": "zarrs.ZarrsCodecPipeline"})
    zarr_format, doc = _level0_document(image)
    start = time.perf_counter()
    source = zarr.open_array(os.path.join(image, "0"), mode="r")
    for k in range(1, levels):
        shape = [*source.shape[:-2], source.shape[-2] // 2, source.shape[-1] // 2]
        _write_metadata(image, str(k), zarr_format, _level_metadata(zarr_format, doc, shape))
        target = zarr.open_array(os.path.join(image, str(k)), mode="r+")
        h, w = 2 * shape[-2], 2 * shape[-1]
        for index in np.ndindex(*shape[:-2]):
            plane = source[index][:h, :w].astype(np.uint32)
            rows = plane[0::2] + plane[1::2]
            total = rows[:, 0::2] + rows[:, 1::2]
            # total / 4 rounded half to even, in integers: +1, and +1 more when the
            # quotient is odd, then floor.
            total += 1 + ((total >> 2) & 1)
            target[index] = (total >> 2).astype(source.dtype)
        source = target
    _report(start)


def _chunk_shape(doc: dict) -> list[int]:
    return doc["chunk_grid"]["configuration"]["chunk_shape"]


def floor_tensorstore(image: str, levels: int) -> None:
    """Read floor: tensorstore reads and decodes every chunk (shard) of level 0 once.

    One read per chunk, a few in flight so tensorstore's thread pool always has a chunk to
    decode; nothing is kept after a chunk is read, so memory stays at a few chunks.
    """
    import tensorstore as ts

    zarr_format, _ = _level0_document(image)
    start = time.perf_counter()
    array = ts.open(_tensorstore_spec(image, "0", zarr_format)).result()
    # Whole shards of a sharded array: each shard file is read once.
    chunks = array.chunk_layout.write_chunk.shape
    pending = []
    for region in _chunk_regions(array.shape, chunks):
        pending.append(array[region].read())
        if len(pending) >= 2 * len(os.sched_getaffinity(0)):
            pending.pop(0).result()
    for future in pending:
        future.result()
    _report(start)


def floor_zarr(image: str, levels: int) -> None:
    """Read floor with zarr-python 3: every chunk (shard) of level 0 once, a thread per core."""
    from concurrent.futures import ThreadPoolExecutor

    import zarr

    start = time.perf_counter()
    array = zarr.open_array(os.path.join(image, "0"), mode="r")
    regions = _chunk_regions(array.shape, array.shards or array.chunks)
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
    "ome-zarr-pyramid": ome_zarr_pyramid,
    "ngio": ngio,
    "zarrs": zarrs_naive,
    "floor-tensorstore": floor_tensorstore,
    "floor-zarr": floor_zarr,
}

if __name__ == "__main__":
    tool, image, levels = sys.argv[1], sys.argv[2], int(sys.argv[3])
    TOOLS[tool](image, levels)
