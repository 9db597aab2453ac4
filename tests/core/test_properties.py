"""Property-based: any shape, dtype, factor, level count, chunk/shard layout, edge and method.

The built levels equal the per-window numpy reference (``imaging.reference_pyramid``) value
for value, the metadata is valid for ome-zarr-models, and a refusal writes nothing.

Examples per test: ``NAPARI_PYRAMIDS_EXAMPLES`` (default 30; e.g. 2000 for a long run).
"""

from __future__ import annotations

import math
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from faultkit import validate_ome
from imaging import DEFAULT_AXES, read_attrs, reference_pyramid, tree_snapshot, write_image
from napari_pyramids.api import build_pyramid
from napari_pyramids.errors import PyramidError
from napari_pyramids.pyramid import plan as plan_module

EXAMPLES = int(os.environ.get("NAPARI_PYRAMIDS_EXAMPLES", 30))
DTYPES = ["uint8", "uint16", "int16", "int32", "uint64", "float32", "float64", "bool"]
METHODS = ["mean", "median", "min", "max", "mode", "nearest"]
# Voxels of level 0: the per-window reference is a Python loop.
MAX_VOXELS = 3000

PROPERTY_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def pool():
    with ThreadPoolExecutor(3) as executor:
        yield executor


def max_levels(shape, factors, edge) -> int:
    """Levels (with level 0) before one would be smaller than a pixel (the plan's rule)."""
    count, current = 1, list(shape)
    while count < 8:
        pairs = list(zip(current, factors, strict=True))
        if any((n < f) if edge == "trim" else (f > 1 and n < 2) for n, f in pairs):
            break
        current = [n // f if edge == "trim" else -(-n // f) for n, f in pairs]
        count += 1
    return count


@st.composite
def cases(draw):
    ndim = draw(st.integers(2, 5))
    axes = DEFAULT_AXES[ndim]
    fxy = draw(st.integers(2, 4))
    fz = draw(st.integers(1, 3)) if "z" in axes else 1
    factors = tuple(fxy if a in "yx" else fz if a == "z" else 1 for a in axes)
    # Big enough for at least one new level along the coarsened axes.
    sizes = {"t": (1, 2), "c": (1, 3), "z": (fz, 9), "y": (fxy, 40), "x": (fxy, 40)}
    shape = [draw(st.integers(*sizes[a])) for a in axes]
    while math.prod(shape) > MAX_VOXELS:
        biggest = int(np.argmax(shape))
        shape[biggest] = max(factors[biggest], shape[biggest] // 2)
    edge = draw(st.sampled_from(["trim", "keep"]))
    zarr_format = draw(st.sampled_from([2, 3]))
    # Chunks of up to a third of an axis, so that blocks (whole chunks) are often several.
    chunks = tuple(draw(st.integers(1, max(1, -(-n // 3)))) for n in shape)
    shards = None
    if zarr_format == 3 and draw(st.booleans()):
        shards = tuple(c * draw(st.integers(1, 3)) for c in chunks)
    chunksize = None
    if draw(st.booleans()):
        chunksize = tuple(draw(st.integers(1, 12)) for _ in shape)
    most = max_levels(shape, factors, edge)
    return {
        "axes": axes,
        "shape": tuple(shape),
        "dtype": draw(st.sampled_from(DTYPES)),
        "factors": factors,
        "edge": edge,
        "num_levels": draw(st.integers(min(2, most), most)),
        "method": draw(st.sampled_from(METHODS)),
        "zarr_format": zarr_format,
        "chunks": chunks,
        "shards": shards,
        "chunksize": chunksize,
        # A 16 MiB budget over many workers leaves a few KiB per block: several passes.
        "workers": draw(st.sampled_from([1, 3, 1024, 4096])),
        "block_cap": draw(st.sampled_from([16, 4096, plan_module.TARGET_BLOCK_BYTES])),
        "seed": draw(st.integers(0, 2**32 - 1)),
    }


def random_data(shape, dtype, seed) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    if dtype.kind == "f":
        return (rng.standard_normal(shape) * 1000).astype(dtype)
    info = np.iinfo(dtype)
    # Full range half of the time (overflow-prone sums), a few labels the other half.
    if seed % 2:
        return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    return rng.integers(0, 4, size=shape).astype(dtype)


@PROPERTY_SETTINGS
@given(case=cases())
def test_built_pyramid_equals_numpy_reference(case, pool):
    data = random_data(case["shape"], case["dtype"], case["seed"])
    with tempfile.TemporaryDirectory() as tmp:
        root = write_image(
            Path(tmp) / "img.zarr",
            data,
            zarr_format=case["zarr_format"],
            chunks=case["chunks"],
            shards=case["shards"],
            axes=case["axes"],
        )
        before = tree_snapshot(root)
        fz = case["factors"][case["axes"].index("z")] if "z" in case["axes"] else 1
        params = {
            "num_levels": case["num_levels"],
            "coarsening_xy": case["factors"][-1],
            "coarsening_z": fz,
            "method": case["method"],
            "edge": case["edge"],
            "chunksize": case["chunksize"],
            "memory_budget": "16MiB",
            "workers": case["workers"],
        }
        refusal = None
        with mock.patch.object(plan_module, "TARGET_BLOCK_BYTES", case["block_cap"]):
            try:
                plan = build_pyramid(zarrurl=root, executor=pool, **params)
            except PyramidError as exc:
                refusal = str(exc)
        if refusal is not None:
            # Only a budget too small for whole chunks may be refused, writing nothing.
            assert "memory budget" in refusal
            assert tree_snapshot(root) == before
            event("refused: memory budget")
            return
        event(f"{len(plan.stages)} pass(es), {plan.total_blocks > len(plan.stages)} multi-block")
        expected = reference_pyramid(
            data, case["factors"], case["num_levels"], case["method"], case["edge"]
        )
        datasets = read_attrs(root)["multiscales"][0]["datasets"]
        assert len(datasets) == case["num_levels"]
        cumulative = [1] * data.ndim
        for k, (entry, want) in enumerate(zip(datasets, expected, strict=True)):
            got = zarr.open_array(root / entry["path"], mode="r")[...]
            assert got.dtype == want.dtype, f"level {k}"
            assert got.shape == want.shape, f"level {k}"
            np.testing.assert_array_equal(got, want, err_msg=f"level {k}")
            scale = entry["coordinateTransformations"][0]["scale"]
            assert scale == [float(c) for c in cumulative], f"level {k}"
            cumulative = [c * f for c, f in zip(cumulative, case["factors"], strict=True)]
        validate_ome(root)
