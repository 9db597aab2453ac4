"""SIGKILL at every filesystem change of an update: every level stays readable, each write
unit holds its old bytes or its new ones (never part of either), level 0 is untouched, and
the next update (or a build with overwrite) finishes the work."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from faultkit import child_update, start
from imaging import age_files, file_hashes, level_paths, write_image
from napari_pyramids import build_pyramid, update_pyramid

LEVELS = 3


def prepared(tmp_path: Path, zarr_format: int, shards) -> tuple[Path, Path]:
    """An aged, built image whose level 0 was then edited, and a fresh build of the edit."""
    rng = np.random.default_rng(7)
    data = rng.integers(0, 500, size=(2, 64, 72), dtype=np.uint16)
    kwargs = {"zarr_format": zarr_format, "chunks": (1, 8, 8), "shards": shards}
    root = write_image(tmp_path / "edited" / "img.zarr", data, **kwargs)
    age_files(root)
    build_pyramid(zarrurl=root, num_levels=LEVELS)
    level0 = zarr.open_array(root / "0", mode="r+")
    level0[0, 5:30, 10:50] = 3
    level0[1, 60:64, 0:8] = 0  # an emptied chunk: its units above may become fill only
    fresh = write_image(tmp_path / "fresh" / "img.zarr", level0[...], **kwargs)
    build_pyramid(zarrurl=fresh, num_levels=LEVELS)
    return root, fresh


def levels_hashes(root: Path) -> dict[str, dict[str, str]]:
    return {path: file_hashes(root / path) for path in level_paths(root)}


@pytest.mark.parametrize(
    ("zarr_format", "shards"),
    [pytest.param(2, None, id="v2"), pytest.param(3, (1, 16, 16), id="v3-sharded")],
)
def test_kill_at_every_step_leaves_units_whole_and_the_next_update_finishes(
    tmp_path, zarr_format, shards
):
    source, fresh = prepared(tmp_path, zarr_format, shards)
    old, new = levels_hashes(source), levels_hashes(fresh)
    clean = tmp_path / "clean" / "img.zarr"
    shutil.copytree(source, clean)
    child = start(child_update, str(clean), None)
    end = child.finish()
    assert end[:2] == ("end", "updated"), child.messages
    total = end[2]
    assert levels_hashes(clean) == new
    assert total >= 4  # each unit: create then replace; the record last
    for kill_at in range(1, total + 1):
        root = tmp_path / f"kill{kill_at}" / "img.zarr"
        shutil.copytree(source, root)
        child = start(child_update, str(root), kill_at)
        child.process.join(60)
        assert child.process.exitcode == -9, f"kill at {kill_at}: {child.messages}"
        now = levels_hashes(root)
        assert now["0"] == old["0"], "level 0 was written"
        for path in level_paths(root)[1:]:
            for name, digest in now[path].items():
                assert digest in (old[path].get(name), new[path].get(name)), (kill_at, name)
            array = zarr.open_array(root / path, mode="r")
            assert array[...].shape == array.shape  # every unit decodes
        assert update_pyramid(zarrurl=root).status == "updated"
        assert levels_hashes(root) == new, f"kill at {kill_at}"
        assert not [p for p in root.iterdir() if p.name.startswith(".napari-pyramids-update")]


def test_build_with_overwrite_finishes_a_killed_update(tmp_path):
    source, fresh = prepared(tmp_path, 2, None)
    child = start(child_update, str(source), 3)
    child.process.join(60)
    assert child.process.exitcode == -9
    build_pyramid(zarrurl=source, num_levels=LEVELS, overwrite=True)
    assert levels_hashes(source) == levels_hashes(fresh)
    assert not [p for p in source.iterdir() if p.name.startswith(".napari-pyramids-update")]
    assert update_pyramid(zarrurl=source).status == "unchanged"
