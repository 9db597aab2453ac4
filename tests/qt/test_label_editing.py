"""Paint a label image's level 0 in a real napari viewer, then update its pyramid (issue 13).

References: level 0 and the levels read back with zarr-python, the pyramid computed with
numpy (``reference_pyramid``, mode for labels), and the chunk files' modification times to
see which write units an update rewrote.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import zarr
from napari.utils.colormaps import DirectLabelColormap

from imaging import age_files, level_paths, reference_pyramid, write_image
from napari_pyramids import build_pyramid

pytestmark = pytest.mark.gui
TIMEOUT = 60_000
SHAPE = (3, 256, 256)
CHUNK = 64
FACTORS = (1, 2, 2)
LEVELS = 3


def _labels(seed: int = 0) -> np.ndarray:
    """Blocky labels (8×8 regions of ids 0..9), like a segmentation."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 10, size=(SHAPE[0], SHAPE[1] // 8, SHAPE[2] // 8), dtype=np.uint32)
    return np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)


def _label_image(tmp_path: Path, zarr_format: int = 2, pyramid: bool = True) -> Path:
    root = write_image(
        tmp_path / "cells.zarr",
        _labels(),
        zarr_format=zarr_format,
        chunks=(1, CHUNK, CHUNK),
        labels=True,
    )
    if pyramid:
        build_pyramid(zarrurl=root, num_levels=LEVELS, method="mode")
        age_files(root)
    return root


def _read(root: Path, level: str) -> np.ndarray:
    return zarr.open_array(root / level, mode="r")[...]


def _chunk_times(root: Path, level: str) -> dict[str, int]:
    folder = root / level
    return {
        str(f.relative_to(folder)): f.stat().st_mtime_ns
        for f in folder.rglob("*")
        if f.is_file() and not f.name.startswith(".") and f.name != "zarr.json"
    }


def _dependent_chunks(changed: np.ndarray, level: int) -> set[tuple[int, ...]]:
    """The chunk indices of ``level`` holding a pixel summarising a changed level-0 pixel."""
    z, y, x = np.nonzero(changed)
    f = 2**level
    ys, xs = (y // f // CHUNK).tolist(), (x // f // CHUNK).tolist()
    return set(zip(z.tolist(), ys, xs, strict=True))


def _chunk_index(key: str) -> tuple[int, ...]:
    return tuple(int(p) for p in key.replace("c/", "").split("/"))


def _multiscale_layer(viewer, root: Path):
    return next(
        layer
        for layer in viewer.layers
        if layer.metadata.get("napari_pyramids_path") == str(root) and layer.multiscale
    )


def _edit_plane(qtbot, viewer, widget, root: Path, z: int):
    widget.open_path(root)
    viewer.dims.set_point(0, z)
    widget["edit"].clicked()
    layer = viewer.layers[-1]
    assert "editing level 0" in layer.name
    return layer


def _paint(qtbot, widget, layer, *strokes) -> None:
    """Paint each (coordinate, label) with the layer's API; wait until written to level 0."""
    with qtbot.waitSignal(widget.editor.written, timeout=TIMEOUT):
        for coord, label in strokes:
            layer.paint(coord, label)


def _update(qtbot, widget) -> str:
    with qtbot.waitSignal(widget.editor.updated, timeout=TIMEOUT) as outcome:
        widget["update"].clicked()
    return outcome.args[0]


def test_painted_stroke_is_written_to_level_0_and_the_update_refreshes_only_its_units(
    qtbot, viewer_and_builder, tmp_path
):
    viewer, widget = viewer_and_builder
    root = _label_image(tmp_path)
    before = _read(root, "0")
    times = {p: _chunk_times(root, p) for p in level_paths(root)[1:]}
    edit = _edit_plane(qtbot, viewer, widget, root, z=1)
    assert edit.data.shape == (1, *SHAPE[1:])
    np.testing.assert_array_equal(edit.data, before[1:2])

    edit.brush_size = 21
    _paint(qtbot, widget, edit, ((0, 100, 120), 99), ((0, 130, 200), 99))

    after = _read(root, "0")
    changed = after != before
    assert changed.any()
    assert (after[changed] == 99).all()
    assert not changed[[0, 2]].any()  # only the plane in view
    np.testing.assert_array_equal(after[1:2], np.asarray(edit.data))
    assert "Update pyramid" in widget["edits"].value

    assert _update(qtbot, widget) == "updated"

    expected = reference_pyramid(after, FACTORS, LEVELS, "mode")
    for k, path in enumerate(level_paths(root)):
        np.testing.assert_array_equal(_read(root, path), expected[k], err_msg=f"level {k}")
    for k, path in enumerate(level_paths(root)[1:], start=1):
        now = _chunk_times(root, path)
        rewritten = {_chunk_index(key) for key, t in now.items() if times[path].get(key) != t}
        assert rewritten == _dependent_chunks(changed, k), f"level {k}"
    layer = _multiscale_layer(viewer, root)
    for k in range(LEVELS):
        np.testing.assert_array_equal(np.asarray(layer.data[k]), expected[k][:, ...])
    assert not widget.editor.check_stale()


def test_a_build_writes_edits_not_on_disk_first(qtbot, viewer_and_builder, tmp_path):
    """The issue's repro: a stroke on a level-0 labels layer, then Build, must not be lost;
    here the layer holds an undo not yet on disk when Build is clicked."""
    _viewer, widget = viewer_and_builder
    root = _label_image(tmp_path, pyramid=False)
    original = _read(root, "0")
    (layer,) = widget.open_path(root)
    assert not layer.multiscale
    layer.brush_size = 15
    _paint(qtbot, widget, layer, ((2, 40, 40), 77))
    _paint(qtbot, widget, layer, ((2, 200, 60), 78))
    on_disk = _read(root, "0")
    assert (on_disk == 77).any()
    assert (on_disk == 78).any()

    layer.undo()  # the second stroke: in the layer, not on disk
    in_layer = np.asarray(layer.data)
    assert (in_layer != _read(root, "0")).any()

    widget.num_levels.value = LEVELS
    widget.method.value = "mode"
    with qtbot.waitSignal(widget.events.build_finished, timeout=TIMEOUT) as outcome:
        widget.build.clicked()
    assert outcome.args[0] == "built"

    level0 = _read(root, "0")
    np.testing.assert_array_equal(level0, in_layer)
    assert (level0 == 77).any()
    assert not (level0 == 78).any()
    assert ((level0 != original) == (in_layer != original)).all()
    expected = reference_pyramid(level0, FACTORS, LEVELS, "mode")
    for k, path in enumerate(level_paths(root)):
        np.testing.assert_array_equal(_read(root, path), expected[k], err_msg=f"level {k}")


def test_a_pyramid_older_than_level_0_is_reported_and_updated(qtbot, viewer_and_builder, tmp_path):
    _viewer, widget = viewer_and_builder
    root = _label_image(tmp_path, zarr_format=3)
    widget.open_path(root)
    assert not widget.editor.check_stale()
    assert "older than its level 0" not in widget["edits"].value

    level0 = zarr.open_array(root / "0", mode="r+")
    level0[0, 10:30, 200:250] = 5  # behind the widget's back
    qtbot.waitUntil(lambda: "older than its level 0" in widget["edits"].value, timeout=10_000)

    assert _update(qtbot, widget) == "updated"
    expected = reference_pyramid(_read(root, "0"), FACTORS, LEVELS, "mode")
    for k, path in enumerate(level_paths(root)):
        np.testing.assert_array_equal(_read(root, path), expected[k], err_msg=f"level {k}")
    assert not widget.editor.check_stale()
    assert "older than its level 0" not in widget["edits"].value


def test_edit_labels_is_refused_for_an_image_layer(qtbot, viewer_and_builder, sample_path):
    viewer, widget = viewer_and_builder
    widget.open_path(sample_path)
    count = len(viewer.layers)
    with qtbot.waitSignal(widget.events.refused, timeout=5000) as refused:
        widget["edit"].clicked()
    assert "labels" in refused.args[0]
    assert len(viewer.layers) == count


def _pixels_of(image: np.ndarray, rgba: np.ndarray) -> int:
    """How many screenshot pixels show the colour ``rgba`` (0..1 floats)."""
    target = np.round(np.asarray(rgba)[:3] * 255)
    return int((np.abs(image[..., :3].astype(int) - target).max(axis=-1) <= 2).sum())


def _camera(viewer):
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


def test_coarse_levels_on_screen_show_the_edit_after_the_update(
    qtbot, viewer_and_builder, tmp_path
):
    viewer, widget = viewer_and_builder
    viewer.window.show()  # a hidden canvas draws nothing
    root = _label_image(tmp_path)
    edit = _edit_plane(qtbot, viewer, widget, root, z=1)
    new = 99
    edit.brush_size = 31
    _paint(qtbot, widget, edit, *(((0, 128, x), new) for x in range(40, 220, 8)))
    shot = os.environ.get("PAINT_SCREENSHOT")
    if shot:  # the edit state, to look at
        viewer.window.screenshot(shot, canvas_only=False)

    edit.visible = False
    # Every label grey but the painted one: its colour on screen is then unmistakable.
    highlight = DirectLabelColormap(color_dict={None: "gray", 0: "black", new: "magenta"})
    layer = _multiscale_layer(viewer, root)
    layer.opacity, layer.colormap = 1.0, highlight
    colour = np.array([1.0, 0.0, 1.0, 1.0])
    _camera(viewer).zoom = 0.3
    stale = viewer.screenshot(canvas_only=True)
    assert layer.data_level >= 1
    assert _pixels_of(stale, np.array([0.5, 0.5, 0.5, 1.0])) > 1000  # the labels are drawn
    assert _pixels_of(stale, colour) == 0

    assert _update(qtbot, widget) == "updated"
    layer = _multiscale_layer(viewer, root)
    layer.opacity, layer.colormap = 1.0, highlight
    _camera(viewer).zoom = 0.3
    fresh = viewer.screenshot(canvas_only=True)
    assert layer.data_level >= 1
    assert _pixels_of(fresh, colour) > 50


def test_cancel_stops_an_update_and_the_next_update_finishes_it(
    qtbot, viewer_and_builder, tmp_path, gated_executor
):
    _viewer, widget = viewer_and_builder
    root = _label_image(tmp_path)
    level0 = zarr.open_array(root / "0", mode="r+")
    level0[:, :, :] = _labels(seed=1)  # every unit changed: the update has many blocks
    widget.open_path(root)
    widget.executor = gated_executor

    with qtbot.waitSignal(widget.editor.updated, timeout=TIMEOUT) as outcome:
        widget["update"].clicked()
        assert gated_executor.held.wait(timeout=30)  # mid-way: a block written
        assert widget.cancel.enabled
        widget.cancel.clicked()
        gated_executor.gate.set()

    assert outcome.args[0] == "cancelled"
    assert "Click Update pyramid again" in widget["edits"].value
    assert not widget.cancel.enabled
    assert widget["update"].enabled
    for path in level_paths(root):  # every level readable, level 0 as edited
        assert _read(root, path).shape[0] == SHAPE[0]
    np.testing.assert_array_equal(_read(root, "0"), _labels(seed=1))

    widget.executor = None
    assert _update(qtbot, widget) == "updated"
    expected = reference_pyramid(_labels(seed=1), FACTORS, LEVELS, "mode")
    for k, path in enumerate(level_paths(root)):
        np.testing.assert_array_equal(_read(root, path), expected[k], err_msg=f"level {k}")
