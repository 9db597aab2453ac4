"""The writer contribution: a layer saved through napari, read back as a multiscale layer."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from ome_zarr_models.v04 import Image

from imaging import reference_pyramid
from napari_pyramids import open_image

pytestmark = pytest.mark.gui


def test_image_layer_round_trip(make_napari_viewer, tmp_path, rng):
    data = rng.integers(0, 60000, size=(2, 600, 530), dtype=np.uint16)
    viewer = make_napari_viewer()
    layer = viewer.add_image(data, name="tiff stack", scale=(3.0, 0.5, 0.5), translate=(0, 5, 9))

    [written] = viewer.layers.save(
        str(tmp_path / "out.zarr"), selected=False, plugin="napari-pyramids"
    )
    viewer.layers.clear()
    [back] = viewer.open(written, plugin="napari-pyramids")

    assert open_image(written).level_paths == ("0", "1", "2")
    assert back.multiscale
    assert len(back.data) == 3
    expected = reference_pyramid(data, (1, 2, 2), 3, "mean")
    for level, reference in zip(back.data, expected, strict=True):
        np.testing.assert_array_equal(np.asarray(level), reference)
    assert back.name == layer.name
    np.testing.assert_allclose(back.scale, layer.scale)
    np.testing.assert_allclose(back.translate, layer.translate)


def test_labels_layer_round_trip(make_napari_viewer, tmp_path, rng):
    labels = rng.integers(0, 5, size=(520, 600), dtype=np.uint32)
    viewer = make_napari_viewer()
    viewer.add_labels(labels, name="segmentation")

    [written] = viewer.layers.save(
        str(tmp_path / "seg.zarr"), selected=False, plugin="napari-pyramids"
    )
    viewer.layers.clear()
    [back] = viewer.open(written, plugin="napari-pyramids")

    assert type(back).__name__ == "Labels"
    assert back.name == "segmentation"
    assert len(back.data) == 3  # 600 -> 300 -> 150: the smallest about 256 px
    expected = reference_pyramid(labels, (2, 2), 3, "mode")
    for index, reference in enumerate(expected):
        np.testing.assert_array_equal(
            zarr.open_array(f"{written}/{index}", mode="r")[...], reference
        )


@pytest.mark.parametrize(
    ("shape", "axes"),
    [((300, 280, 3), ["c", "y", "x"]), ((4, 300, 280, 3), ["c", "z", "y", "x"])],
    ids=["2d", "z-stack"],
)
def test_rgb_layer_is_saved_with_colour_as_the_channel_axis(
    make_napari_viewer, tmp_path, rng, shape, axes
):
    data = rng.integers(0, 255, size=shape, dtype=np.uint8)
    viewer = make_napari_viewer()
    layer = viewer.add_image(data, name="photo", rgb=True)
    assert layer.rgb

    [written] = viewer.layers.save(
        str(tmp_path / "rgb.zarr"), selected=False, plugin="napari-pyramids"
    )

    Image.from_zarr(zarr.open_group(written, mode="r"))
    assert [a.name for a in open_image(written).axes] == axes
    np.testing.assert_array_equal(
        zarr.open_array(f"{written}/0", mode="r")[...], np.moveaxis(data, -1, 0)
    )
