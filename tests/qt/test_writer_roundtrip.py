"""The writer contribution: a layer saved through napari, read back as a multiscale layer."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import zarr
from ome_zarr_models.v04 import Image
from ome_zarr_models.v05 import Image as ImageV05

from imaging import reference_pyramid
from napari_pyramids import open_image
from napari_pyramids._napari.writer import SaveRefused

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


def _writer(display_name):
    """Our writer contribution shown in napari's save dialog under ``display_name``."""
    from npe2 import PluginManager

    manifest = PluginManager.instance().get_manifest("napari-pyramids")
    [writer] = [w for w in manifest.contributions.writers if w.display_name == display_name]
    return writer


@pytest.mark.parametrize(
    ("writer", "model"),
    [("OME-Zarr with pyramid", Image), ("OME-Zarr 0.5 (zarr v3) with pyramid", ImageV05)],
    ids=["ngff0.4", "ngff0.5"],
)
def test_a_cyan_layer_reopens_cyan_with_its_contrast_in_both_readers(
    make_napari_viewer, tmp_path, rng, writer, model
):
    data = rng.integers(0, 3000, size=(600, 530), dtype=np.uint16)
    viewer = make_napari_viewer()
    viewer.add_image(data, name="nuclei", colormap="cyan", contrast_limits=(100, 1500))

    [written] = viewer.layers.save(
        str(tmp_path / "cyan.zarr"), selected=False, _writer=_writer(writer)
    )
    model.from_zarr(zarr.open_group(written, mode="r"))
    viewer.layers.clear()
    [ours] = viewer.open(written, plugin="napari-pyramids")
    [theirs] = viewer.open(written, plugin="napari-ome-zarr")

    for back in (ours, theirs):
        np.testing.assert_allclose(back.colormap.colors[-1], [0.0, 1.0, 1.0, 1.0])
        assert tuple(back.contrast_limits) == (100, 1500)
        assert back.visible
    assert ours.name == "nuclei"
    assert theirs.name.endswith("nuclei")
    np.testing.assert_array_equal(np.asarray(ours.data[0]), data)


def test_two_selected_layers_of_one_image_are_saved_as_its_two_channels(
    make_napari_viewer, tmp_path, rng
):
    dna = rng.integers(0, 4000, size=(3, 520, 600), dtype=np.uint16)
    actin = rng.integers(0, 4000, size=(3, 520, 600), dtype=np.uint16)
    viewer = make_napari_viewer()
    scale = (2.0, 0.5, 0.5)
    first = viewer.add_image(dna, name="cells c0", colormap="magenta", scale=scale,
                             contrast_limits=(10, 900))  # fmt: skip
    second = viewer.add_image(actin, name="cells c1", colormap="green", scale=scale,
                              contrast_limits=(5, 3000), visible=False)  # fmt: skip
    viewer.add_image(rng.random((7, 7)), name="unrelated")
    viewer.layers.selection = {first, second}

    [written] = viewer.layers.save(
        str(tmp_path / "two.zarr"), selected=True, _writer=_writer("OME-Zarr with pyramid")
    )

    Image.from_zarr(zarr.open_group(written, mode="r"))
    image = open_image(written)
    assert [a.name for a in image.axes] == ["c", "z", "y", "x"]
    assert image.multiscale["name"] == "cells"
    level0 = zarr.open_array(f"{written}/0", mode="r")[...]
    np.testing.assert_array_equal(level0, np.stack([dna, actin]))
    expected = reference_pyramid(np.stack([dna, actin]), (1, 1, 2, 2), 3, "mean")
    np.testing.assert_array_equal(zarr.open_array(f"{written}/2", mode="r")[...], expected[2])
    viewer.layers.clear()
    back = viewer.open(written, plugin="napari-pyramids")
    assert [layer.name for layer in back] == ["cells c0", "cells c1"]
    assert [tuple(layer.contrast_limits) for layer in back] == [(10, 900), (5, 3000)]
    np.testing.assert_allclose(back[0].colormap.colors[-1], [1.0, 0.0, 1.0, 1.0])
    np.testing.assert_allclose(back[1].colormap.colors[-1], [0.0, 1.0, 0.0, 1.0])
    assert [layer.visible for layer in back] == [True, False]
    np.testing.assert_allclose(back[0].scale, scale)
    theirs = viewer.open(written, plugin="napari-ome-zarr")
    for mine, other in zip(back, theirs, strict=True):
        assert other.name.endswith(mine.name)
        np.testing.assert_allclose(other.colormap.colors[-1], mine.colormap.colors[-1])
        assert tuple(other.contrast_limits) == tuple(mine.contrast_limits)
        assert other.visible == mine.visible


def test_layers_of_different_shapes_are_refused_in_our_words(make_napari_viewer, tmp_path, rng):
    viewer = make_napari_viewer()
    viewer.add_image(rng.random((40, 30)), name="small")
    viewer.add_image(rng.random((60, 30)), name="tall")

    with pytest.raises(SaveRefused, match=r"different shapes \('small' 40×30, 'tall' 60×30\)"):
        viewer.layers.save(str(tmp_path / "mixed.zarr"), selected=False, plugin="napari-pyramids")
    assert not (tmp_path / "mixed.zarr").exists()


@pytest.mark.qt_no_exception_capture
def test_saving_over_an_existing_path_shows_our_message_not_napari_s(
    make_napari_viewer, tmp_path, rng, monkeypatch
):
    """File > Save Selected Layers... onto an existing folder: the user reads why."""
    from napari._qt.dialogs.qt_notification import NapariQtNotification
    from napari.plugins._npe2 import file_extensions_string_for_layers
    from napari.utils.notifications import notification_manager
    from qtpy.QtWidgets import QFileDialog

    existing = tmp_path / "taken.zarr"
    existing.mkdir()
    (existing / "notes.txt").write_text("keep me")
    viewer = make_napari_viewer(show=True)
    viewer.add_image(rng.random((30, 40)), name="image")
    filters, _ = file_extensions_string_for_layers(list(viewer.layers))
    ours = next(f for f in filters.split(";;") if f.startswith("Pyramid Builder OME-Zarr with"))
    monkeypatch.setattr(
        QFileDialog, "getSaveFileName", lambda *args, **kwargs: (str(existing), ours)
    )
    shown = []
    monkeypatch.setattr(
        NapariQtNotification, "show", lambda self: shown.append(self.message.text())
    )
    [action] = [a for a in viewer.window.file_menu.actions() if a.text().startswith("Save Sel")]

    before = len(notification_manager.records)
    with notification_manager:  # as napari.run() installs it: errors become notifications
        action.trigger()
    new = notification_manager.records[before:]
    del notification_manager.records[before:]
    messages = [n.message for n in new]
    for notification in new:  # its traceback holds the viewer, which would leak
        notification.exception.__traceback__ = None
    sys.last_exc = sys.last_value = sys.last_traceback = None  # set by PyQt, same reason

    expected = f"{existing} already exists; choose a new name. Nothing was written."
    assert messages == [expected]
    assert shown == [expected]
    assert sorted(p.name for p in existing.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("plugin", ["napari-pyramids", "napari-pyramids.write_layers_v3"])
def test_an_image_and_its_labels_selected_together_are_saved_as_one_image_with_labels(
    make_napari_viewer, tmp_path, rng, plugin
):
    from ome_zarr_models.v04.image import Image as ImageV04

    from plates import validate_image

    image = rng.integers(0, 60000, size=(600, 530), dtype=np.uint16)
    cells = rng.integers(0, 5, size=(600, 530), dtype=np.uint32)
    viewer = make_napari_viewer()
    viewer.add_image(image, name="nuclei", scale=(0.5, 0.5))
    viewer.add_labels(cells, name="cells / nuclei", scale=(0.5, 0.5))

    [written] = viewer.layers.save(str(tmp_path / "out.zarr"), selected=False, plugin=plugin)

    validate_image(tmp_path / "out.zarr")  # ome-zarr-models: labels with the image's levels
    if plugin == "napari-pyramids":
        model = ImageV04.from_zarr(zarr.open_group(written, mode="r"))
        assert model.labels is not None
    assert open_image(written).level_paths == ("0", "1", "2")
    label_root = f"{written}/labels/cells_nuclei"  # a safe folder name from the layer's
    assert open_image(label_root).level_paths == ("0", "1", "2")
    for index, reference in enumerate(reference_pyramid(cells, (2, 2), 3, "mode")):
        np.testing.assert_array_equal(zarr.open_array(f"{label_root}/{index}")[...], reference)
    for index, reference in enumerate(reference_pyramid(image, (2, 2), 3, "mean")):
        np.testing.assert_array_equal(zarr.open_array(f"{written}/{index}")[...], reference)

    viewer.layers.clear()
    back = viewer.open(written, plugin="napari-pyramids")
    assert [type(layer).__name__ for layer in back] == ["Image", "Labels"]
    assert all(len(layer.data) == 3 for layer in back)


def test_labels_of_another_shape_are_refused_and_nothing_is_written(
    make_napari_viewer, tmp_path, rng
):
    viewer = make_napari_viewer()
    viewer.add_image(rng.integers(0, 255, size=(64, 64), dtype=np.uint8), name="img")
    viewer.add_labels(np.zeros((32, 64), dtype=np.uint8), name="cells")

    with pytest.raises(SaveRefused) as refused:
        viewer.layers.save(str(tmp_path / "out.zarr"), selected=False, plugin="napari-pyramids")

    assert "the labels 'cells' are 32×64 but the image is 64×64" in refused.value.message
    assert not (tmp_path / "out.zarr").exists()
