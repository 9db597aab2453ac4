"""The multiscales metadata: valid for ome-zarr-models, complete for napari-ome-zarr's reader."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from napari_ome_zarr import napari_get_reader
from ome_zarr_models.v04.image import Image as ImageV04
from ome_zarr_models.v05.image import Image as ImageV05

from imaging import read_attrs, write_image
from napari_pyramids import build_pyramid, lazy_pyramid
from napari_pyramids.pyramid.methods import METHODS


def validate(path, zarr_format):
    group = zarr.open_group(str(path), mode="r")
    if zarr_format == 2:
        return ImageV04.from_zarr(group).attributes.multiscales[0]
    return ImageV05.from_zarr(group).attributes.ome.multiscales[0]


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_metadata_validates_and_napari_ome_zarr_sees_every_level(tmp_path, rng, zarr_format):
    data = rng.integers(0, 1000, size=(2, 3, 64, 72), dtype=np.uint16)
    path = write_image(
        tmp_path / "img.zarr", data, zarr_format=zarr_format,
        scale=(1.0, 2.0, 0.325, 0.325), translation=(0.0, 10.0, 5.0, -3.0),
    )  # fmt: skip
    built = build_pyramid(zarrurl=path, num_levels=4)
    multiscale = validate(path, zarr_format)
    assert [d.path for d in multiscale.datasets] == ["0", "1", "2", "3"]

    reader = napari_get_reader(str(path))
    assert reader is not None
    (layer_data, _, layer_type), *_ = reader(str(path))
    assert layer_type == "image"
    assert [level.shape for level in layer_data] == [lv.shape for lv in built.levels]
    np.testing.assert_array_equal(np.asarray(layer_data[3]), zarr.open_array(str(path / "3"))[...])


@pytest.mark.parametrize("method", ["mean", "nearest"])
def test_scale_and_translation_keep_level_centres_aligned(tmp_path, rng, method):
    s0, t0 = (2.0, 0.5, 0.25), (1.0, 10.0, -4.0)
    path = write_image(
        tmp_path / "img.zarr", rng.integers(0, 9, size=(4, 32, 32), dtype=np.uint8),
        scale=s0, translation=t0,
    )  # fmt: skip
    build_pyramid(zarrurl=path, num_levels=3, coarsening_xy=2, coarsening_z=2, method=method)
    datasets = read_attrs(path)["multiscales"][0]["datasets"]
    for k, dataset in enumerate(datasets[1:], start=1):
        transforms = {t["type"]: t for t in dataset["coordinateTransformations"]}
        factor = 2**k
        assert transforms["scale"]["scale"] == [s * factor for s in s0]
        # A level-k pixel averages level-0 pixels [i*F, (i+1)*F): its centre moves by
        # (F-1)/2 level-0 pixels; nearest keeps the first pixel, so no shift.
        shift = (factor - 1) / 2 if method == "mean" else 0.0
        expected = [t + shift * s for t, s in zip(t0, s0, strict=True)]
        assert transforms["translation"]["translation"] == pytest.approx(expected)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_other_attributes_are_preserved(tmp_path, rng, zarr_format):
    channel = {
        "label": "DAPI",
        "color": "0000FF",
        "window": {"start": 0, "end": 9, "min": 0, "max": 9},
        "active": True,
    }
    omero = {"channels": [channel], "rdefs": {"model": "color"}}
    path = write_image(
        tmp_path / "img.zarr", rng.integers(0, 9, size=(1, 16, 16), dtype=np.uint8),
        axes="cyx", zarr_format=zarr_format, extra_attrs={"omero": omero},
    )  # fmt: skip
    group = zarr.open_group(str(path), mode="a")
    group.attrs["acquisition"] = {"microscope": "spinning disk", "objective": "40x"}
    before = read_attrs(path)
    second = dict(before["multiscales"][0], name="other")
    attrs = dict(before, multiscales=[before["multiscales"][0], second])
    if zarr_format == 2:
        group.attrs["multiscales"] = attrs["multiscales"]
    else:
        group.attrs["ome"] = {**group.attrs["ome"], "multiscales": attrs["multiscales"]}
    build_pyramid(zarrurl=path, num_levels=3)
    after = read_attrs(path)
    assert after["omero"] == omero
    assert after["multiscales"][1] == second
    assert after["multiscales"][0]["axes"] == before["multiscales"][0]["axes"]
    assert after["multiscales"][0]["name"] == before["multiscales"][0]["name"]
    raw = zarr.open_group(str(path), mode="r").attrs.asdict()
    assert raw["acquisition"] == {"microscope": "spinning disk", "objective": "40x"}
    validate(path, zarr_format)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("edge", ["trim", "keep"])
def test_lazy_pyramid_is_byte_identical_to_the_build(tmp_path, rng, method, edge):
    data = rng.integers(0, 500, size=(2, 67, 71), dtype=np.uint16)
    path = write_image(tmp_path / "img.zarr", data, chunks=(1, 16, 16))
    levels = lazy_pyramid(zarrurl=path, num_levels=4, method=method, edge=edge)
    assert not (path / "1").exists()  # a preview writes nothing
    build_pyramid(zarrurl=path, num_levels=4, method=method, edge=edge)
    for k, level in enumerate(levels):
        np.testing.assert_array_equal(level.compute(), zarr.open_array(str(path / str(k)))[...])
