"""Our reader in napari, against images written by others and against napari-ome-zarr."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from ome_zarr.format import FormatV04, FormatV05
from ome_zarr.writer import write_image as ome_write_image
from ome_zarr.writer import write_labels as ome_write_labels

from imaging import write_image

pytestmark = pytest.mark.gui


def _third_party_image(path, fmt, rng):
    data = rng.integers(0, 3000, size=(2, 3, 96, 80), dtype=np.uint16)
    labels = np.zeros((3, 96, 80), dtype=np.uint16)
    labels[:, 10:50, 10:40] = 5
    group = zarr.open_group(path, mode="w", zarr_format=fmt.zarr_format)
    channels = [
        {"label": "DAPI", "color": "0000FF", "window": {"start": 10, "end": 2500}},
        {"label": "GFP", "color": "00FF00", "window": {"start": 0, "end": 900}, "active": False},
    ]
    for channel in channels:
        channel["window"].update({"min": 0, "max": 65535})
    ome_write_image(
        data, group, axes="czyx", fmt=fmt, scale_factors=(2, 4),
        scale={"z": 3.0, "y": 0.25, "x": 0.25}, omero={"channels": channels},
    )  # fmt: skip
    ome_write_labels(labels, group, name="cells", axes="zyx", fmt=fmt, scale_factors=(2,))
    return data, labels


@pytest.mark.parametrize("fmt", [FormatV04(), FormatV05()], ids=["ngff0.4", "ngff0.5"])
def test_layers_match_napari_ome_zarr(make_napari_viewer, tmp_path, rng, fmt):
    path = tmp_path / "third.ome.zarr"
    data, labels = _third_party_image(path, fmt, rng)
    ours_viewer = make_napari_viewer()
    theirs_viewer = make_napari_viewer()

    ours = ours_viewer.open(str(path), plugin="napari-pyramids")
    theirs = theirs_viewer.open(str(path), plugin="napari-ome-zarr")

    assert [type(layer).__name__ for layer in ours] == ["Image", "Image", "Labels"]
    assert [type(layer).__name__ for layer in theirs] == ["Image", "Image", "Labels"]
    for mine, other in zip(ours, theirs, strict=True):
        assert mine.multiscale == other.multiscale
        assert [lv.shape for lv in mine.data] == [lv.shape for lv in other.data]
        np.testing.assert_allclose(mine.scale, other.scale)
        np.testing.assert_allclose(mine.translate, other.translate)
        np.testing.assert_allclose(other.affine.affine_matrix, np.eye(other.ndim + 1))
        np.testing.assert_allclose(mine.affine.affine_matrix, np.eye(mine.ndim + 1))
        np.testing.assert_array_equal(np.asarray(mine.data[-1]), np.asarray(other.data[-1]))
        assert mine.source.path == str(path)
    for mine, other in zip(ours[:2], theirs[:2], strict=True):
        assert other.name.endswith(mine.name)  # they prefix the image name
        assert mine.colormap.name == other.colormap.name
        assert tuple(mine.contrast_limits) == tuple(other.contrast_limits)
        assert mine.visible == other.visible
    assert ours[1].visible is False
    np.testing.assert_array_equal(np.asarray(ours[0].data[0]), data[0])
    np.testing.assert_array_equal(np.asarray(ours[2].data[0]), labels)
    np.testing.assert_allclose(ours[0].scale, (3.0, 0.25, 0.25))
    assert ours[2].metadata["napari_pyramids_path"] == str(path / "labels" / "cells")


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_plain_zarr_image_with_translation_and_units(
    make_napari_viewer, tmp_path, rng, zarr_format
):
    data = rng.random((40, 30)).astype(np.float32)
    path = write_image(
        tmp_path / "plain.zarr", data, zarr_format=zarr_format, scale=[0.5, 0.25],
        translation=[100.0, -20.0],
    )  # fmt: skip
    viewer = make_napari_viewer()

    [layer] = viewer.open(str(path), plugin="napari-pyramids")

    assert not layer.multiscale
    np.testing.assert_array_equal(np.asarray(layer.data), data)
    np.testing.assert_allclose(layer.scale, (0.5, 0.25))
    np.testing.assert_allclose(layer.translate, (100.0, -20.0))
    assert [str(u) for u in layer.units] == ["micrometer", "micrometer"]
    assert layer.name == "plain.zarr"
    assert layer.source.path == str(path)
