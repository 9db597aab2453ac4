"""core.request: the widget's controls turned into a plan, or a refusal naming the control."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from imaging import tree_snapshot, write_image
from napari_pyramids import build_pyramid, open_image
from napari_pyramids._napari.request import (
    control_limits,
    default_request,
    plan_request,
    voxel_z_factor,
)
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


@pytest.mark.parametrize(
    ("scale", "shape", "levels", "expected"),
    [
        ([0.5, 0.5, 0.5], (96, 1024, 1024), 3, 2),  # cubes stay cubes: 24×256×256
        ([2.0, 0.5, 0.5], (96, 1024, 1024), 3, 1),  # 2 µm planes, 2 µm pixels at level 2
        ([1.5, 1.0, 1.0], (96, 1024, 1024), 4, 2),  # near-isotropic: 1.5*8 vs 8 beats 1.5 vs 8
        ([0.5, 0.5, 0.5], (4, 1024, 1024), 4, 1),  # 4 planes cannot be halved three times
    ],
)
def test_the_default_z_factor_keeps_the_coarsest_voxels_closest_to_cubes(
    tmp_path, scale, shape, levels, expected
):
    image = _empty_image(tmp_path, shape, scale)
    assert voxel_z_factor(image, 2, levels) == expected
    # The brute-force reference: the coarsest level's Z/XY spacing ratio nearest to 1.
    ratios = {f: scale[0] * f ** (levels - 1) / (scale[1] * 2 ** (levels - 1)) for f in (1, 2)}
    fitting = [f for f in ratios if shape[0] // f ** (levels - 1) >= 1]
    assert expected == min(fitting, key=lambda f: (abs(np.log(ratios[f])), f))


def test_the_widget_default_follows_the_voxels_but_the_api_default_stays_the_seed_s(tmp_path):
    root = write_image(
        tmp_path / "iso.zarr", np.zeros((32, 512, 512), np.uint8), scale=[0.5, 0.5, 0.5]
    )
    image = open_image(root)

    assert default_request(image).coarsening_z == 2
    assert BuildRequest().coarsening_z == 1  # build_pyramid's, as fractal-tasks-core's


def test_control_limits_are_the_levels_and_factors_the_image_allows(tmp_path):
    image = open_image(write_image(tmp_path / "a.zarr", np.zeros((5, 100, 40), np.uint8)))

    limits = control_limits(image, BuildRequest(coarsening_xy=2, coarsening_z=1))
    assert (limits.num_levels, limits.coarsening_xy, limits.coarsening_z) == (6, 16, 5)
    # 40 -> 20 -> 10 -> 5 -> 2 -> 1: six levels; with Z halved too, 5 -> 2 -> 1: three.
    assert control_limits(image, BuildRequest(coarsening_z=2)).num_levels == 3
    for count in (limits.num_levels, limits.num_levels + 1):
        request = BuildRequest(num_levels=count)
        if count == limits.num_levels:
            assert len(plan_request(image, request).levels) == count
        else:
            with pytest.raises(PyramidError, match=f"choose at most {limits.num_levels} levels"):
                plan_request(image, request)


def test_core_refusals_reach_the_widget_without_api_or_cli_words(tmp_path, rng):
    labels = open_image(
        write_image(tmp_path / "l.zarr", np.zeros((64, 64), np.uint32), labels=True)
    )
    flat = open_image(write_image(tmp_path / "f.zarr", np.zeros((64, 64), np.uint8)))
    messages = []
    for image, request in [
        (labels, BuildRequest(num_levels=2, method="mean")),
        (flat, BuildRequest(num_levels=2, coarsening_z=2)),
        (flat, BuildRequest(num_levels=9)),
    ]:
        with pytest.raises(PyramidError) as refused:
            plan_request(image, request)
        messages.append(str(refused.value))
    # The library still says it in its own words.
    with pytest.raises(PyramidError, match=r"labels=False \(CLI: --not-labels\)"):
        build_pyramid(zarrurl=labels.root, num_levels=2, method="mean")

    assert "Choose the method 'mode'" in messages[0]
    assert "set 'factor Z' to 1" in messages[1]
    assert "choose at most 7 levels" in messages[2]
    for message in messages:
        assert not any(w in message for w in ("num_levels", "coarsening", "CLI", "labels=")), (
            message
        )


def _empty_image(folder, shape, scale):
    """A zyx image of ``shape`` whose chunks are never written (zarr reads the fill value)."""
    root = write_image(folder / "v.zarr", np.zeros((1, 1, 1), np.uint8), scale=scale)
    zarr.open_group(root, mode="a").create_array(
        "0", shape=shape, chunks=(1, 256, 256), dtype=np.uint8, overwrite=True,
        chunk_key_encoding={"name": "v2", "separator": "/"},
    )  # fmt: skip
    return open_image(root)
