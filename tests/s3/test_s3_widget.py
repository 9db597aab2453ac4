"""The Pyramid Builder in a real napari viewer with images in object storage: an image
opened from ``s3://`` is built in place; one served read-only over HTTP is refused with the
way out (save a copy with our writer), and nothing is requested to be written."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from imaging import reference_pyramid, write_image
from s3kit import download, upload

pytestmark = pytest.mark.gui
BUILD_TIMEOUT = 120_000


@pytest.fixture
def viewer_and_builder(make_napari_viewer):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-pyramids", "Pyramid Builder")
    return viewer, widget


def test_an_s3_image_is_built_from_the_widget_and_reloaded(
    qtbot, tmp_path, rng, s3_server, s3_env, bucket, viewer_and_builder
):
    viewer, widget = viewer_and_builder
    data = rng.integers(0, 4000, size=(2, 128, 128), dtype=np.uint16)
    local = write_image(tmp_path / "img.zarr", data, chunks=(1, 32, 32), axes="cyx")
    upload(s3_server.client(), local, bucket, "lab/img.zarr")
    url = f"s3://{bucket}/lab/img.zarr"

    layers = viewer.open(url, plugin="napari-pyramids")
    assert set(widget.image.choices) == set(layers)
    widget.image.value = layers[0]
    widget.num_levels.value = 3
    with qtbot.waitSignal(widget.events.build_finished, timeout=BUILD_TIMEOUT) as outcome:
        widget.build.clicked()

    assert outcome.args[0] == "built"
    copy = download(s3_server.client(), bucket, "lab/img.zarr", tmp_path / "copy.zarr")
    expected = reference_pyramid(data, (1, 2, 2), 3, "mean")
    for level in range(3):
        np.testing.assert_array_equal(
            zarr.open_array(copy / str(level), mode="r")[...], expected[level]
        )
    assert len(viewer.layers) == 2
    for layer in viewer.layers:
        assert layer.multiscale
        assert len(layer.data) == 3
    np.testing.assert_array_equal(np.asarray(viewer.layers[1].data[2]), expected[2][1])


def test_an_http_image_build_is_refused_with_the_way_out(qtbot, viewer_and_builder, http_image):
    viewer, widget = viewer_and_builder
    data, url = http_image

    layers = viewer.open(url, plugin="napari-pyramids")
    np.testing.assert_array_equal(np.asarray(layers[0].data), data)
    widget.image.value = layers[0]
    widget.num_levels.value = 2
    with qtbot.waitSignal(widget.events.refused, timeout=10_000) as refused:
        widget.build.clicked()

    assert "read only" in refused.args[0]
    assert "Save Selected Layers" in refused.args[0]
    assert len(viewer.layers) == 1
    assert not viewer.layers[0].multiscale
