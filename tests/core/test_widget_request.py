"""core.request: the widget's controls turned into a plan, or a refusal naming the control."""

from __future__ import annotations

import numpy as np
import pytest

from imaging import tree_snapshot, write_image
from napari_pyramids import build_pyramid, open_image
from napari_pyramids._napari.request import default_request, plan_request
from napari_pyramids.errors import PyramidError
from napari_pyramids.options import BuildOptions as BuildRequest
from napari_pyramids.options import parse_chunksize
from read_only_helper import read_only


def test_defaults_reach_about_256_px_and_labels_use_mode(tmp_path):
    image = open_image(write_image(tmp_path / "a.zarr", np.zeros((3, 2048, 1500), np.uint8)))
    labels = open_image(
        write_image(tmp_path / "l.zarr", np.zeros((600, 300), np.uint32), labels=True)
    )

    # 2048 -> 1024 -> 512 -> 256: four levels, the smallest about 256 px.
    assert default_request(image) == BuildRequest(num_levels=4, method="mean")
    assert default_request(labels) == BuildRequest(num_levels=3, method="mode")


def test_chunk_text_is_parsed_or_refused_naming_the_axes(tmp_path):
    image = open_image(write_image(tmp_path / "a.zarr", np.zeros((4, 64, 64), np.uint8)))

    assert parse_chunksize(" 1, 32 ,32 ", image) == (1, 32, 32)
    assert parse_chunksize("(2,16,16)", image) == (2, 16, 16)
    assert parse_chunksize("  ", image) is None
    with pytest.raises(PyramidError, match=r"not a list of integers.*\(z, y, x\)"):
        parse_chunksize("1,a,32", image)
    with pytest.raises(PyramidError, match="has 2 numbers but the image has 3 axes"):
        parse_chunksize("32,32", image)


def test_an_existing_pyramid_is_refused_unless_overwrite(tmp_path, rng):
    root = write_image(tmp_path / "a.zarr", rng.integers(0, 9, (64, 64), dtype=np.uint8))
    build_pyramid(zarrurl=root, num_levels=3)
    image = open_image(root)

    with pytest.raises(PyramidError, match=r"already multiscale with the 3 levels.*'overwrite'"):
        plan_request(image, BuildRequest(num_levels=3))
    with pytest.raises(PyramidError, match="already has 3 levels; tick 'overwrite'"):
        plan_request(image, BuildRequest(num_levels=2))
    plan = plan_request(image, BuildRequest(num_levels=3, overwrite=True))
    assert [lv.shape for lv in plan.levels] == [(64, 64), (32, 32), (16, 16)]


def test_too_many_levels_and_a_single_level_are_refused(tmp_path):
    image = open_image(write_image(tmp_path / "a.zarr", np.zeros((40, 40), np.uint8)))

    with pytest.raises(PyramidError, match="smaller than one pixel"):
        plan_request(image, BuildRequest(num_levels=7))
    with pytest.raises(PyramidError, match="choose 2 or more levels"):
        plan_request(image, BuildRequest(num_levels=1))


def test_read_only_image_is_refused_and_untouched(tmp_path):
    root = write_image(tmp_path / "a.zarr", np.zeros((64, 64), np.uint8))
    before = tree_snapshot(root)

    with read_only(root), pytest.raises(PyramidError, match="is read-only"):
        plan_request(open_image(root), BuildRequest(num_levels=2))

    assert tree_snapshot(root) == before
