"""core.estimate: the disk space a build needs, compared with what the build really writes."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from imaging import write_image
from napari_pyramids import build_pyramid, open_image, plan_pyramid
from napari_pyramids._napari.sample_data import write_sample_image
from napari_pyramids.estimate import compression_ratio, disk_estimate

_METADATA = {".zarray", ".zattrs", "zarr.json"}


def _stored_bytes(folder):
    total = 0
    for directory, _, files in os.walk(folder):
        total += sum(
            os.path.getsize(os.path.join(directory, f)) for f in files if f not in _METADATA
        )
    return total


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_estimate_predicts_the_bytes_the_build_writes(tmp_path, zarr_format):
    root = write_sample_image(tmp_path / "s.zarr", zarr_format=zarr_format, size=512, depth=2)
    plan = plan_pyramid(open_image(root), num_levels=3)

    estimate = disk_estimate(plan)
    build_pyramid(zarrurl=root, num_levels=3)
    written = sum(_stored_bytes(root / level.path) for level in plan.new_levels)

    # Coarser levels of the same data compress a little differently; within a third is
    # what the widget's "needs ~X on disk" promises.
    assert written * 0.67 < estimate.stored_bytes < written * 1.5
    assert estimate.free_bytes is not None
    assert estimate.fits


def test_raw_bytes_count_whole_edge_chunks(tmp_path, rng):
    data = rng.integers(0, 255, size=(100, 70), dtype=np.uint8)
    root = write_image(tmp_path / "img.zarr", data, chunks=(32, 32))
    plan = plan_pyramid(open_image(root), num_levels=3)

    estimate = disk_estimate(plan, ratio=1.0)

    # Level 1 is 50 x 35 in 2 x 2 chunks of 32 x 32; level 2 (25 x 17) gets one chunk
    # clipped to its shape.
    assert estimate.raw_bytes == 4 * 32 * 32 + 25 * 17
    assert estimate.stored_bytes == estimate.raw_bytes


def test_noise_does_not_compress_and_fill_value_is_unmeasurable(tmp_path, rng):
    noise = rng.integers(0, 2**16, size=(128, 128), dtype=np.uint16)
    noisy = write_image(tmp_path / "noise.zarr", noise, chunks=(64, 64))
    empty = write_image(tmp_path / "empty.zarr", np.zeros((128, 128), np.uint16))
    for path in (empty / "0").rglob("*"):
        if path.is_file() and path.name not in _METADATA:
            path.unlink()

    ratio = compression_ratio(open_image(noisy))
    assert ratio == pytest.approx(_stored_bytes(noisy / "0") / (128 * 128 * 2))
    assert ratio > 0.9
    assert compression_ratio(open_image(empty)) is None
    plan = plan_pyramid(open_image(empty), num_levels=2)
    assert disk_estimate(plan).stored_bytes == math.prod((64, 64)) * 2
