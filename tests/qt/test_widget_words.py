"""The Pyramid Builder speaks in its own controls' words, offers only what the image allows,
names plate fields by their place, and starts Z from the voxel size (real viewer, Xvfb)."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from qtpy.QtCore import Qt

from imaging import tree_snapshot, write_image
from napari_pyramids import build_pyramid, open_image
from napari_pyramids._napari.sample_data import write_sample_image
from napari_pyramids._napari.texts import SAVE_AS_OME_ZARR
from plates import ome_zarr_plate

pytestmark = pytest.mark.gui
BUILD_TIMEOUT = 60_000
# What a person at the widget cannot act on: the library's and the CLI's words.
API_WORDS = ("num_levels", "coarsening", "labels=", "CLI", "--", "memory_budget", "pass ")


def _open(viewer, path):
    return viewer.open(str(path), plugin="napari-pyramids")


def _build(qtbot, widget):
    with qtbot.waitSignal(widget.events.build_finished, timeout=BUILD_TIMEOUT) as outcome:
        widget.build.clicked()
    return outcome.args[0]


def _refusal(qtbot, widget, button):
    with qtbot.waitSignal(widget.events.refused, timeout=5000) as refused:
        button.clicked()
    return refused.args[0]


def _in_widget_words(text):
    return not any(word in text for word in API_WORDS)


def test_spin_boxes_offer_only_what_the_image_allows(viewer_and_builder, tmp_path, rng):
    viewer, widget = viewer_and_builder
    # z, y, x = 6 x 512 x 300: Y/X factor 2 gives 512 ... 2 along X (300 -> 150 ... 2 -> 1).
    path = write_image(tmp_path / "v.zarr", rng.integers(0, 9, (6, 512, 300), dtype=np.uint8))
    _open(viewer, path)

    # Cubic voxels: Z starts halved with Y and X, 6 -> 3 -> 1 planes, so three levels at most.
    assert widget.coarsening_z.value == 2
    assert widget.num_levels.max == 3
    assert widget.coarsening_z.max == 6
    assert widget.coarsening_xy.max == 16

    widget.coarsening_z.value = 1
    reference = [open_image(path).level0.shape]
    while min(n // 2 for n in reference[-1][1:]) >= 1:
        z, y, x = reference[-1]
        reference.append((z, y // 2, x // 2))
    assert widget.num_levels.max == len(reference) == 9
    widget.coarsening_xy.value = 4  # 300 -> 75 -> 18 -> 4 -> 1: five levels
    assert widget.num_levels.max == 5
    widget.num_levels.native.setValue(11)  # as typed: Qt keeps it within the bounds
    assert widget.num_levels.value == 5
    assert "level 4 (4): 6×2×1" in widget.summary.value
    assert widget.status.value.startswith("Ready")


def test_an_image_without_z_has_no_z_factor_to_set(viewer_and_builder, tmp_path, rng):
    viewer, widget = viewer_and_builder
    path = write_image(tmp_path / "flat.zarr", rng.integers(0, 9, (300, 40), dtype=np.uint8))
    _open(viewer, path)

    assert widget.coarsening_z.max == 1
    assert not widget.coarsening_z.enabled
    assert widget.coarsening_xy.max == 16
    widget.coarsening_xy.value = 16
    assert widget.num_levels.max == 2  # 40 -> 2 -> below one pixel


def test_refusals_name_the_controls_not_the_api(qtbot, viewer_and_builder, tmp_path, rng):
    viewer, widget = viewer_and_builder
    labels = write_image(
        tmp_path / "seg.zarr", rng.integers(0, 5, (64, 64), dtype=np.uint32), labels=True
    )
    image = write_image(tmp_path / "img.zarr", rng.integers(0, 9, (64, 64), dtype=np.uint8))
    # A stray level 1 the metadata does not list: only the planner finds it.
    zarr.open_group(image, mode="a").create_array("1", shape=(32, 32), dtype=np.uint8)
    before = tree_snapshot(tmp_path)

    _open(viewer, labels)
    widget.method.value = "mean"
    message = _refusal(qtbot, widget, widget.build)
    assert "label ids" in message
    assert "Choose the method 'mode'" in message
    assert message in widget.summary.value
    assert _in_widget_words(message), message

    viewer.layers.clear()
    _open(viewer, image)
    widget.num_levels.value = 2
    message = _refusal(qtbot, widget, widget.build)
    assert "pyramid level '1' already exists" in message
    assert "tick 'overwrite'" in message
    assert _in_widget_words(message), message

    assert tree_snapshot(tmp_path) == before


def test_a_tiff_layer_is_listed_with_the_way_to_make_it_ome_zarr(
    viewer_and_builder, tmp_path, rng
):
    tifffile = pytest.importorskip("tifffile")
    viewer, widget = viewer_and_builder
    path = tmp_path / "cells.tif"
    tifffile.imwrite(path, rng.integers(0, 255, size=(32, 32), dtype=np.uint8))

    [layer] = viewer.open(str(path), plugin="napari")

    assert layer.source.path == str(path)
    assert widget.image.choices == ()
    assert "'cells' (read from cells.tif, a file, not OME-Zarr)" in widget.info.value
    assert SAVE_AS_OME_ZARR in widget.info.value
    assert "File > Save Selected Layers..." in SAVE_AS_OME_ZARR


def test_a_complete_image_says_its_refusal_once_and_overwrite_is_unticked_after_a_build(
    qtbot, viewer_and_builder, sample_path
):
    viewer, widget = viewer_and_builder
    build_pyramid(zarrurl=sample_path, num_levels=2)
    _open(viewer, sample_path)
    widget.num_levels.value = 2

    assert "already multiscale with the 2 levels" in widget.summary.value
    assert "already multiscale" not in widget.status.value
    before = tree_snapshot(sample_path)
    message = _refusal(qtbot, widget, widget.build)  # clicked anyway: said once, not twice
    assert "already multiscale with the 2 levels" in message
    assert "already multiscale" not in widget.status.value
    assert "summary above" in widget.status.value
    assert tree_snapshot(sample_path) == before
    widget.overwrite.value = True
    assert widget.status.value.startswith("Ready")

    assert _build(qtbot, widget) == "built"

    assert widget.overwrite.value is False
    assert widget.status.value == "Built 2 levels of sample.ome.zarr."
    assert "already multiscale with the 2 levels" in widget.summary.value


def test_fields_of_a_plate_are_named_by_their_place(qtbot, viewer_and_builder, tmp_path, rng):
    viewer, widget = viewer_and_builder
    plate = tmp_path / "plate.zarr"
    ome_zarr_plate(plate, "0.4", rng, wells=("A/1",), fields=2, label_fields=())

    first = _open(viewer, plate / "A" / "1" / "0")
    second = _open(viewer, plate / "A" / "1" / "1")

    names = [layer.name for layer in [*first, *second]]
    assert all(name.startswith("plate.zarr/A/1/") for name in names), names
    assert len(set(names)) == len(names)
    widget.image.value = first[0]
    widget.num_levels.value = 2
    assert _build(qtbot, widget) == "built"
    assert widget.status.value == "Built 2 levels of plate.zarr/A/1/0."


def test_z_follows_the_voxel_size_and_the_summary_says_what_3d_draws(
    viewer_and_builder, tmp_path, rng
):
    viewer, widget = viewer_and_builder
    cubes = write_image(
        tmp_path / "iso.zarr", rng.integers(0, 9, (32, 512, 512), dtype=np.uint8),
        scale=[0.5, 0.5, 0.5],
    )  # fmt: skip
    slabs = write_image(
        tmp_path / "aniso.zarr", rng.integers(0, 9, (32, 512, 512), dtype=np.uint8),
        scale=[2.0, 0.25, 0.25],
    )  # fmt: skip

    _open(viewer, cubes)
    # 512 -> 256: two levels; Z halved with Y and X, so the voxels stay cubes.
    assert (widget.num_levels.value, widget.coarsening_z.value) == (2, 2)
    assert "3D view: level 1, 16×256×256 (Z×Y×X), voxels 1×1×1 micrometer" in (
        widget.summary.value
    )

    viewer.layers.clear()
    _open(viewer, slabs)
    # Planes 2 µm apart, pixels 0.5 µm at level 1: Z is not coarsened yet.
    assert widget.coarsening_z.value == 1
    assert "3D view: level 1, 32×256×256 (Z×Y×X), voxels 2×0.5×0.5 micrometer (Z kept)" in (
        widget.summary.value
    )


def test_every_line_of_the_wrapped_texts_shows_in_a_crowded_dock(
    qtbot, make_napari_viewer, tmp_path
):
    # The README screenshots' image, where the summary lost its last line.
    path = write_sample_image(tmp_path / "sample.ome.zarr", size=2048, depth=4)
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1280, 860)
    dock, widget = viewer.window.add_plugin_dock_widget("napari-pyramids", "Pyramid Builder")
    _open(viewer, path)
    widget.method.value = "max"
    widget.preview.clicked()  # its status is the longest
    labels = {name: widget[name].native for name in ("info", "summary", "status")}

    clipped = []
    for width in range(200, 330, 6):  # docks of many widths, as users drag them
        viewer.window._qt_window.resizeDocks([dock], [width], Qt.Orientation.Horizontal)
        qtbot.wait(50)  # Qt lays the dock out again
        for name, label in labels.items():
            needed = label.heightForWidth(label.width())
            assert needed > 2 * label.fontMetrics().lineSpacing(), name  # wrapped
            if label.height() < needed:
                clipped.append((width, name, label.height(), needed))
    assert clipped == []
