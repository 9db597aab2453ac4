"""The Pyramid Builder on layers from other doors: labels, napari-ome-zarr, a path, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

from imaging import reference_pyramid, tree_snapshot, write_image
from napari_pyramids import open_image

pytestmark = pytest.mark.gui
BUILD_TIMEOUT = 60_000


def _image_with_labels(tmp_path, rng):
    data = rng.integers(0, 1000, size=(2, 300, 280), dtype=np.uint16)
    root = write_image(tmp_path / "img.zarr", data, axes="cyx")
    labels = rng.integers(0, 6, size=(300, 280), dtype=np.uint32)
    write_image(root / "labels" / "cells", labels, axes="yx", labels=True)
    (root / "labels" / ".zgroup").write_text('{"zarr_format": 2}')
    (root / "labels" / ".zattrs").write_text(json.dumps({"labels": ["cells"]}))
    return root, data, labels


def test_labels_layer_is_built_with_mode_and_images_untouched(
    qtbot, viewer_and_builder, tmp_path, rng
):
    viewer, widget = viewer_and_builder
    root, _, labels = _image_with_labels(tmp_path, rng)
    first, second, cells = viewer.open(str(root), plugin="napari-pyramids")
    image_files = {k: v for k, v in tree_snapshot(root).items() if "labels" not in k}

    widget.image.value = cells
    assert widget.method.value == "mode"
    assert widget.num_levels.value == 2  # 300 -> 150
    with qtbot.waitSignal(widget.events.build_finished, timeout=BUILD_TIMEOUT) as outcome:
        widget.build.clicked()

    assert outcome.args == ["built"]
    label_root = root / "labels" / "cells"
    assert open_image(label_root).level_paths == ("0", "1")
    expected = reference_pyramid(labels, (2, 2), 2, "mode")[1]
    np.testing.assert_array_equal(zarr.open_array(label_root / "1", mode="r")[...], expected)
    new_cells = viewer.layers["cells"]
    assert type(new_cells).__name__ == "Labels"
    assert new_cells.multiscale
    assert viewer.layers[0] is first
    assert viewer.layers[1] is second
    assert {k: v for k, v in tree_snapshot(root).items() if "labels" not in k} == image_files


def test_layers_opened_by_napari_ome_zarr_are_built_and_replaced(
    qtbot, viewer_and_builder, sample_path
):
    viewer, widget = viewer_and_builder
    theirs = viewer.open(str(sample_path), plugin="napari-ome-zarr")
    names = [layer.name for layer in theirs]
    assert set(widget.image.choices) == set(theirs)
    widget.num_levels.value = 2

    with qtbot.waitSignal(widget.events.build_finished, timeout=BUILD_TIMEOUT):
        widget.build.clicked()

    assert [layer.name for layer in viewer.layers] == names
    assert all(layer.multiscale and len(layer.data) == 2 for layer in viewer.layers)
    assert open_image(sample_path).level_paths == ("0", "1")


def test_open_path_picks_the_image_or_refuses_an_unreadable_one(
    qtbot, viewer_and_builder, tmp_path, rng
):
    viewer, widget = viewer_and_builder
    good = write_image(tmp_path / "good.zarr", rng.random((600, 600)).astype(np.float32))
    bad = write_image(tmp_path / "bad.zarr", rng.random((16, 16)).astype(np.float32))
    (bad / ".zattrs").write_text('{"multiscales": [')
    before = tree_snapshot(bad)

    with qtbot.waitSignal(widget.events.refused) as refused:
        assert widget.open_path(bad) == []
    assert "is not valid JSON" in refused.args[0]
    assert widget.status.value == refused.args[0]
    assert len(viewer.layers) == 0

    [layer] = widget.open_path(good)

    assert tree_snapshot(bad) == before
    assert widget.image.value is layer
    assert layer.source.path == str(good)
    assert widget.num_levels.value == 3  # 600 -> 300 -> 150


def test_gui_command_opens_napari_with_the_widget_and_the_image(qtbot, sample_path):
    from napari_pyramids._napari._qt.widget import PyramidBuilder
    from napari_pyramids._napari.launch import open_viewer

    viewer = open_viewer(sample_path, run=False)
    try:
        widget = viewer.window.dock_widgets["Pyramid Builder (napari-pyramids)"]
        assert isinstance(widget, PyramidBuilder)
        assert [layer.name for layer in viewer.layers] == ["nuclei", "membranes"]
        assert widget.image.value in list(viewer.layers)
        assert viewer.layers[0].metadata["napari_pyramids_path"] == str(sample_path)
    finally:
        viewer.close()
