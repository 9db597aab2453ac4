"""The napari side with images in object storage, without Qt: listed, previewed, planned."""

from __future__ import annotations

import numpy as np
import pytest
from napari.components import ViewerModel

from imaging import write_image
from napari_pyramids._napari.picker import LayerPicker, read_layers, root_or_none
from napari_pyramids._napari.request import plan_request
from napari_pyramids.errors import PyramidError
from napari_pyramids.images import open_image
from napari_pyramids.options import BuildOptions
from s3kit import upload


def test_layers_of_an_s3_image_are_listed_and_planned(tmp_path, rng, s3_server, s3_env, bucket):
    data = rng.integers(0, 255, size=(2, 64, 64), dtype=np.uint8)
    local = write_image(tmp_path / "img.zarr", data, chunks=(1, 32, 32), axes="cyx")
    upload(s3_server.client(), local, bucket, "img.zarr")
    url = f"s3://{bucket}/img.zarr"
    viewer = ViewerModel()
    picker = LayerPicker(viewer.layers)

    for layer in read_layers(url):
        viewer.add_layer(layer)
    plan = plan_request(open_image(url), BuildOptions(num_levels=3))

    assert [name for name, _ in picker.choices()] == ["img.zarr c1", "img.zarr c0"]
    assert root_or_none(viewer.layers[0]) == url
    assert [lv.shape for lv in plan.levels] == [(2, 64, 64), (2, 32, 32), (2, 16, 16)]


def test_an_http_image_is_listed_but_its_build_says_save_a_copy(http_image):
    data, url = http_image
    viewer = ViewerModel()
    picker = LayerPicker(viewer.layers)

    layers = read_layers(url)
    for layer in layers:
        viewer.add_layer(layer)

    assert len(picker.choices()) == 1
    np.testing.assert_array_equal(np.asarray(layers[0].data), data)
    with pytest.raises(PyramidError, match=r"read only.*Save Selected Layers"):
        plan_request(open_image(url), BuildOptions(num_levels=2))
