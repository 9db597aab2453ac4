"""Planning: blocks aligned to whole output chunks, within the memory budget."""

from __future__ import annotations

import json

import numpy as np
import pytest

from imaging import write_image
from napari_pyramids import PyramidError, open_image, plan_pyramid
from napari_pyramids.pyramid.plan import task_bytes


@pytest.mark.parametrize("budget", ["16MiB", "64MiB", "256MiB"])
@pytest.mark.parametrize("method", ["mean", "median", "mode"])
def test_every_block_task_fits_its_share_of_the_budget(tmp_path, budget, method):
    data = np.zeros((2, 4, 1024, 1024), dtype=np.uint16)
    path = write_image(tmp_path / "img.zarr", data, chunks=(1, 1, 256, 256))
    plan = plan_pyramid(
        open_image(path), num_levels=6, method=method, memory_budget=budget, workers=2
    )
    for stage in plan.stages:
        cost = task_bytes(plan.levels, stage.source, stage.targets[-1], stage.block, method)
        assert cost <= plan.memory_budget // plan.workers
        for k in stage.targets:
            # Block edges fall on whole chunks of every level the stage writes.
            level = plan.levels[k]
            relative = [
                c // b
                for c, b in zip(
                    level.cumulative, plan.levels[stage.source].cumulative, strict=True
                )
            ]
            for axis, (size, n) in enumerate(
                zip(stage.block, plan.levels[stage.source].shape, strict=True)
            ):
                if size < n:
                    assert (size // relative[axis]) % level.write_unit[axis] == 0
    assert [t for s in plan.stages for t in s.targets] == [1, 2, 3, 4, 5]


def test_a_smaller_budget_means_more_blocks_not_more_memory(tmp_path):
    path = write_image(
        tmp_path / "img.zarr", np.zeros((4, 2048, 2048), np.uint16), chunks=(1, 512, 512)
    )
    image = open_image(path)
    blocks = [
        plan_pyramid(image, num_levels=4, memory_budget=b).total_blocks for b in ("16MiB", "1GiB")
    ]
    assert blocks[0] > blocks[1]


def test_a_chunk_larger_than_the_budget_is_refused_before_reading(tmp_path):
    path = write_image(tmp_path / "img.zarr", np.zeros((1, 8, 8), np.uint8), chunks=(1, 8, 8))
    # The metadata claims 4096**3-voxel chunks (64 GiB); nothing that big exists on disk.
    zarray = path / "0" / ".zarray"
    meta = json.loads(zarray.read_text())
    meta["shape"] = meta["chunks"] = [4096, 4096, 4096]
    zarray.write_text(json.dumps(meta))
    with pytest.raises(PyramidError, match="bigger than the memory budget"):
        plan_pyramid(open_image(path), num_levels=2)
