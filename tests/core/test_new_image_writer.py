"""core.writer: a layer's array saved as a new OME-Zarr image with its pyramid."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from ome_zarr_models.v04 import Image, ImageLabel
from ome_zarr_models.v05 import Image as ImageV05
from ome_zarr_models.v05 import ImageLabel as ImageLabelV05

from imaging import reference_pyramid
from napari_pyramids import open_image
from napari_pyramids.errors import PyramidError
from napari_pyramids.newimage import ChannelDisplay, write_new_image


def test_image_is_saved_with_metadata_and_a_correct_pyramid(tmp_path, rng):
    data = rng.integers(0, 5000, size=(3, 600, 520), dtype=np.uint16)

    root = write_new_image(
        tmp_path / "new.zarr", data, axes=["z", "y", "x"], scale=[2.0, 0.5, 0.5],
        translation=[0.0, 10.0, -3.0], name="cells", unit="micrometer",
    )  # fmt: skip

    Image.from_zarr(zarr.open_group(root, mode="r"))
    image = open_image(root)
    assert image.multiscale["name"] == "cells"
    assert [a.unit for a in image.axes] == ["micrometer"] * 3
    assert image.translation0 == (0.0, 10.0, -3.0)
    reference = reference_pyramid(data, (1, 2, 2), 3, "mean")
    assert len(image.level_paths) == 3  # 600 -> 300 -> 150: the smallest about 256 px
    for path, expected in zip(image.level_paths, reference, strict=True):
        np.testing.assert_array_equal(zarr.open_array(root / path, mode="r")[...], expected)


def test_labels_are_saved_as_a_label_image_built_with_mode(tmp_path, rng):
    labels = rng.integers(0, 4, size=(520, 520), dtype=np.uint32)

    root = write_new_image(tmp_path / "seg.zarr", labels, labels=True)

    ImageLabel.from_zarr(zarr.open_group(root, mode="r"))
    image = open_image(root)
    assert image.is_label
    expected = reference_pyramid(labels, (2, 2), 2, "mode")[1]
    np.testing.assert_array_equal(zarr.open_array(root / "1", mode="r")[...], expected)


def test_bad_layers_are_refused_and_leave_nothing(tmp_path):
    with pytest.raises(PyramidError, match="1D layer cannot be saved"):
        write_new_image(tmp_path / "a.zarr", np.zeros(10))
    with pytest.raises(PyramidError, match="cannot be saved"):
        write_new_image(tmp_path / "b.zarr", np.array([["a", "b"], ["c", "d"]]))
    (tmp_path / "c.zarr").mkdir()
    with pytest.raises(PyramidError, match="already exists"):
        write_new_image(tmp_path / "c.zarr", np.zeros((8, 8)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.zarr"]
    assert not any((tmp_path / "c.zarr").iterdir())


class PlanesOnly:
    """A layer's array that may be read a plane at a time but never converted whole."""

    def __init__(self, data: np.ndarray) -> None:
        self.data, self.shape, self.dtype, self.ndim = data, data.shape, data.dtype, data.ndim

    def __getitem__(self, index):
        assert np.ndim(self.data[index]) <= 2, "more than a plane read at once"
        return self.data[index]

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole array was converted at once")


def test_a_big_layer_is_written_plane_by_plane_never_whole(tmp_path, rng):
    data = rng.integers(0, 5000, size=(3, 64, 48), dtype=np.uint16)
    root = write_new_image(tmp_path / "new.zarr", PlanesOnly(data))
    np.testing.assert_array_equal(zarr.open_array(root / "0", mode="r")[...], data)


@pytest.mark.parametrize(("zarr_format", "model"), [(2, Image), (3, ImageV05)])
def test_channel_display_is_written_as_omero_metadata(tmp_path, rng, zarr_format, model):
    data = rng.integers(0, 4000, size=(2, 300, 280), dtype=np.uint16)
    channels = [
        ChannelDisplay("DNA", "00FFFF", window=(100.0, 1500.0)),
        ChannelDisplay("actin", "ff00ff", window=(0.0, 900.0), active=False),
    ]

    root = write_new_image(
        tmp_path / "c.zarr", data, axes=["c", "y", "x"], channels=channels,
        zarr_format=zarr_format,
    )  # fmt: skip

    group = zarr.open_group(root, mode="r")
    model.from_zarr(group)
    attrs = group.attrs.asdict()
    omero = (attrs["ome"] if zarr_format == 3 else attrs)["omero"]
    assert omero["channels"] == [
        {"label": "DNA", "color": "00FFFF", "active": True,
         "window": {"start": 100.0, "end": 1500.0, "min": 0.0, "max": 65535.0}},
        {"label": "actin", "color": "FF00FF", "active": False,
         "window": {"start": 0.0, "end": 900.0, "min": 0.0, "max": 65535.0}},
    ]  # fmt: skip
    assert open_image(root).zarr_format == zarr_format
    np.testing.assert_array_equal(zarr.open_array(root / "0", mode="r")[...], data)


def test_channel_settings_that_do_not_fit_are_refused(tmp_path):
    with pytest.raises(PyramidError, match="1 channel display settings for 2 channel"):
        write_new_image(
            tmp_path / "a.zarr", np.zeros((2, 8, 8), np.uint8), axes=["c", "y", "x"],
            channels=[ChannelDisplay("one")],
        )  # fmt: skip
    red = ChannelDisplay("x", "red")
    with pytest.raises(PyramidError, match="not six hex digits"):
        write_new_image(tmp_path / "b.zarr", np.zeros((8, 8)), channels=[red])
    assert not any(tmp_path.iterdir())


def test_labels_in_ngff_0_5_are_a_valid_label_image(tmp_path, rng):
    labels = rng.integers(0, 4, size=(300, 300), dtype=np.uint32)

    root = write_new_image(tmp_path / "seg.zarr", labels, labels=True, zarr_format=3)

    ImageLabelV05.from_zarr(zarr.open_group(root, mode="r"))
    assert open_image(root).is_label
    expected = reference_pyramid(labels, (2, 2), 2, "mode")[1]
    np.testing.assert_array_equal(zarr.open_array(root / "1", mode="r")[...], expected)
