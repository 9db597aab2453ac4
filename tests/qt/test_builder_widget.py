"""The Pyramid Builder in a real napari viewer: pick, preview, build, cancel, refuse."""

from __future__ import annotations

import errno
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import zarr
from napari.utils import progress
from napari.utils.notifications import notification_manager
from qtpy.QtCore import Qt, QThreadPool
from qtpy.QtGui import QTextDocument

from imaging import reference_pyramid, tree_snapshot
from napari_pyramids import build_pyramid, open_image, plan_pyramid
from napari_pyramids._napari._qt.widget import NO_LAYER, notification_text
from napari_pyramids._napari.sample_data import (
    sample_level0,
    sample_planes,
    wait_for_sample,
    write_sample_image,
)
from napari_pyramids.storage.transaction import LOCK_NAME
from read_only_helper import read_only

pytestmark = pytest.mark.gui
BUILD_TIMEOUT = 60_000


def _open(viewer, path):
    return viewer.open(str(path), plugin="napari-pyramids")


def _click_and_wait(qtbot, widget, button):
    with qtbot.waitSignal(widget.events.build_finished, timeout=BUILD_TIMEOUT) as outcome:
        button.clicked()
    return outcome.args[0]


def _refusal(qtbot, widget, button):
    with qtbot.waitSignal(widget.events.refused, timeout=5000) as refused:
        button.clicked()
    return refused.args[0]


def test_sample_opens_and_is_listed_with_sensible_defaults(qtbot, viewer_and_builder):
    viewer, widget = viewer_and_builder

    layers = viewer.open_sample("napari-pyramids", "sample", size=1024)

    root = open_image(layers[0].metadata["napari_pyramids_path"]).root
    assert [layer.name for layer in layers] == ["nuclei", "membranes"]
    assert set(widget.image.choices) == set(layers)
    assert widget.image.value in layers
    assert str(root) in widget.info.value
    # 1024 -> 512 -> 256: three levels, the smallest about 256 px; mean for an image.
    assert widget.num_levels.value == 3
    assert widget.method.value == "mean"
    assert "level 2 (2): 2×4×256×256" in widget.summary.value
    assert "on disk" in widget.summary.value
    # Listed at once (its chunks are written in a thread), whole on disk soon after.
    assert wait_for_sample(root, timeout=60)
    expected = sample_planes(1024, 4)
    np.testing.assert_array_equal(zarr.open_array(str(root / "0"), mode="r")[...], expected)
    z = viewer.dims.current_step[0]
    np.testing.assert_array_equal(np.asarray(layers[1].data[z]), expected[1, z])
    assert sample_level0(root) is None
    # What napari shows (private: no public accessor to the slice drawn) is the written
    # plane, on this plane and on another one.
    for layer, channel in zip(layers, (0, 1), strict=True):
        qtbot.waitUntil(
            lambda layer=layer, channel=channel: np.array_equal(
                np.asarray(layer._slice.image.raw), expected[channel, z]
            ),
            timeout=10_000,
        )
    viewer.dims.set_current_step(0, (z + 1) % 4)
    np.testing.assert_array_equal(np.asarray(layers[0]._slice.image.raw), expected[0, (z + 1) % 4])


def test_picker_follows_layers_and_explains_the_others(viewer_and_builder, sample_path):
    viewer, widget = viewer_and_builder
    assert widget.image.choices == ()
    assert NO_LAYER in widget.info.value

    zarr_layers = _open(viewer, sample_path)
    plain = viewer.add_image(np.zeros((8, 8)), name="scratch")

    assert set(widget.image.choices) == set(zarr_layers)
    assert "'scratch' (not read from a file)" in widget.info.value
    viewer.layers.remove(zarr_layers[0])
    assert widget.image.choices == (zarr_layers[1],)
    viewer.layers.remove(zarr_layers[1])
    assert widget.image.choices == ()
    assert NO_LAYER in widget.info.value
    assert plain in viewer.layers


def test_picker_follows_the_layer_selected_in_the_layer_list(viewer_and_builder, tmp_path):
    viewer, widget = viewer_and_builder
    first = _open(viewer, write_sample_image(tmp_path / "a.zarr", size=256, depth=1))
    second = _open(viewer, write_sample_image(tmp_path / "b.zarr", size=256, depth=1))
    plain = viewer.add_image(np.zeros((8, 8)), name="scratch")

    viewer.layers.selection.active = first[1]
    assert widget.image.value is first[1]
    assert "a.zarr" in widget.info.value
    viewer.layers.selection.active = plain  # not listed: the pick stays
    assert widget.image.value is first[1]
    viewer.layers.selection.active = second[0]
    assert widget.image.value is second[0]
    assert "b.zarr" in widget.info.value


def test_preview_is_multiscale_as_planned_and_writes_nothing(
    qtbot, viewer_and_builder, sample_path
):
    viewer, widget = viewer_and_builder
    sources = _open(viewer, sample_path)
    before = tree_snapshot(sample_path)
    widget.num_levels.value = 3

    with qtbot.waitSignal(widget.events.preview_updated):
        widget.preview.clicked()

    plan = plan_pyramid(open_image(sample_path), num_levels=3)
    previews = widget.preview_layers
    assert [layer.name for layer in previews] == ["nuclei (preview)", "membranes (preview)"]
    expected = reference_pyramid(sample_planes(512, 4)[0], (1, 2, 2), 3, "mean")
    for layer in previews:
        assert layer.multiscale
        assert [tuple(level.shape) for level in layer.data] == [lv.shape[1:] for lv in plan.levels]
    np.testing.assert_array_equal(previews[0].data[2].computed(), expected[2])
    assert not any(layer.visible for layer in sources)
    assert tree_snapshot(sample_path) == before

    # Clicking again, or changing a parameter (debounced), replaces the preview.
    with qtbot.waitSignal(widget.events.preview_updated):
        widget.preview.clicked()
    with qtbot.waitSignal(widget.events.preview_updated, timeout=5000):
        widget.num_levels.value = 2
    names = [layer.name for layer in viewer.layers]
    assert names.count("nuclei (preview)") == 1
    assert names.count("membranes (preview)") == 1
    assert [len(layer.data) for layer in widget.preview_layers] == [2, 2]

    # Deleting the preview shows the source again.
    with qtbot.waitSignal(widget.events.preview_updated):
        viewer.layers.remove(widget.preview_layers[0])
        viewer.layers.remove(widget.preview_layers[0])
    assert all(layer.visible for layer in sources)
    assert tree_snapshot(sample_path) == before


def test_build_writes_levels_and_reloads_layers_keeping_display(
    qtbot, viewer_and_builder, sample_path
):
    viewer, widget = viewer_and_builder
    nuclei, membranes = _open(viewer, sample_path)
    nuclei.name = "my nuclei"
    nuclei.contrast_limits = (50, 1500)
    nuclei.colormap = "green"
    nuclei.gamma = 0.8
    nuclei.opacity = 0.6
    membranes.visible = False
    membranes.blending = "minimum"
    membranes.scale = (4.0, 1.0, 1.0)
    membranes.translate = (0.0, 7.0, -2.0)
    widget.image.value = nuclei
    widget.num_levels.value = 3
    widget.preview.clicked()

    assert _click_and_wait(qtbot, widget, widget.build) == "built"

    image = open_image(sample_path)
    assert image.level_paths == ("0", "1", "2")
    data = sample_planes(512, 4)
    expected = reference_pyramid(data, (1, 1, 2, 2), 3, "mean")
    np.testing.assert_array_equal(zarr.open_array(sample_path / "2", mode="r")[...], expected[2])
    assert widget.preview_layers == ()
    assert len(viewer.layers) == 2
    new_nuclei, new_membranes = viewer.layers
    for layer in viewer.layers:
        assert layer.multiscale
        assert len(layer.data) == 3
        assert layer.source.path == str(sample_path)
    assert new_nuclei.name == "my nuclei"
    assert tuple(new_nuclei.contrast_limits) == (50, 1500)
    assert new_nuclei.colormap.name == "green"
    assert new_nuclei.gamma == pytest.approx(0.8)
    assert new_nuclei.opacity == pytest.approx(0.6)
    assert new_nuclei.visible
    assert not new_membranes.visible
    assert new_membranes.blending == "minimum"
    np.testing.assert_allclose(new_membranes.scale, (4.0, 1.0, 1.0))
    np.testing.assert_allclose(new_membranes.translate, (0.0, 7.0, -2.0))
    np.testing.assert_allclose(new_nuclei.scale, (2.0, 0.5, 0.5))
    assert widget.image.value is new_nuclei
    # What napari shows is what is on disk.
    np.testing.assert_array_equal(np.asarray(new_membranes.data[1]), expected[1][1])


def test_cancel_mid_build_leaves_the_image_unchanged(
    qtbot, viewer_and_builder, sample_path, gated_executor
):
    viewer, widget = viewer_and_builder
    layers = _open(viewer, sample_path)
    before = tree_snapshot(sample_path)
    widget.num_levels.value = 3
    widget.memory_budget = "16MiB"  # several blocks, so there is a middle to cancel in
    widget.workers = 2
    widget.executor = gated_executor

    widget.build.clicked()
    assert gated_executor.held.wait(timeout=30)  # one block written, the next one held
    assert tree_snapshot(sample_path) != before  # the build folder exists
    assert "Building pyramid" in [bar.desc for bar in progress._all_instances]  # activity dock
    widget.cancel.clicked()
    with qtbot.waitSignal(widget.events.build_finished, timeout=BUILD_TIMEOUT) as outcome:
        gated_executor.gate.set()

    assert outcome.args[0] == "cancelled"
    assert tree_snapshot(sample_path) == before
    assert not (sample_path / LOCK_NAME).exists()
    assert list(viewer.layers) == layers
    assert not any(layer.multiscale for layer in viewer.layers)
    assert widget.build.enabled
    assert widget.status.value == "Cancelled; the image is unchanged."


def test_status_and_progress_show_the_outcome_when_progress_arrives_with_the_end(
    qtbot, viewer_and_builder, sample_path
):
    """napari's progress bar processes events while it updates: the end of the build can be
    handled in the middle of a progress report, which must not then overwrite it."""
    viewer, widget = viewer_and_builder
    _open(viewer, sample_path)
    widget.num_levels.value = 2

    widget.build.clicked()
    # Hold the UI thread until the build is over: all its progress and its end then wait in
    # the queue together, as they do on a busy or slow display.
    QThreadPool.globalInstance().waitForDone()
    with qtbot.waitSignal(widget.events.build_finished, timeout=BUILD_TIMEOUT) as outcome:
        pass

    assert outcome.args[0] == "built"
    assert widget.status.value == "Built 2 levels of sample.ome.zarr."
    assert widget.progress.value == widget.progress.max
    assert widget.build.enabled
    assert not widget.cancel.enabled


def test_a_cancel_after_the_publish_reports_the_build_and_reloads_it(
    qtbot, viewer_and_builder, sample_path, gated_executor
):
    """Cancel clicked as the build ends: once the levels are published it comes too late, and
    the widget must say the pyramid was built (not that the image is unchanged) and show it."""
    viewer, widget = viewer_and_builder
    _open(viewer, sample_path)
    widget.num_levels.value = 2
    widget.memory_budget = "16MiB"  # several blocks: the build waits on the gate mid-way
    widget.workers = 2
    widget.executor = gated_executor
    widget.build.clicked()
    assert gated_executor.held.wait(timeout=30)
    worker = widget.worker
    phases = []

    def cancel_when_published(step):  # runs in the worker thread, right after the step
        phases.append(step.phase)
        if step.phase == "done":
            worker.quit()

    worker.yielded.connect(cancel_when_published, Qt.ConnectionType.DirectConnection)
    with qtbot.waitSignal(widget.events.build_finished, timeout=BUILD_TIMEOUT) as outcome:
        gated_executor.gate.set()

    assert phases[-1] == "done"
    assert worker.abort_requested
    assert outcome.args[0] == "built"
    assert widget.status.value == "Built 2 levels of sample.ome.zarr (the cancel came too late)."
    assert open_image(sample_path).level_paths == ("0", "1")
    assert all(layer.multiscale and len(layer.data) == 2 for layer in viewer.layers)


class FullDiskExecutor(ThreadPoolExecutor):
    """Every block fails as if the disk were full."""

    def submit(self, fn, /, *args, **kwargs):
        def fail():
            raise OSError(errno.ENOSPC, "No space left on device")

        return super().submit(fail)


def test_a_failed_build_is_reported_and_changes_nothing(qtbot, viewer_and_builder, sample_path):
    viewer, widget = viewer_and_builder
    _open(viewer, sample_path)
    before = tree_snapshot(sample_path)
    widget.num_levels.value = 2
    widget.executor = FullDiskExecutor(max_workers=1)

    assert _click_and_wait(qtbot, widget, widget.build) == "failed"

    assert "the disk is full" in widget.status.value
    assert "the disk is full" in notification_manager.records[-1].message
    assert tree_snapshot(sample_path) == before
    assert not any(layer.multiscale for layer in viewer.layers)
    widget.executor.shutdown()


def test_no_zarr_layer_is_refused(qtbot, viewer_and_builder):
    viewer, widget = viewer_and_builder
    viewer.add_image(np.zeros((64, 64)))

    assert _refusal(qtbot, widget, widget.build) == NO_LAYER
    assert _refusal(qtbot, widget, widget.preview) == NO_LAYER
    assert widget.worker is None


def test_existing_pyramid_without_overwrite_is_refused(qtbot, viewer_and_builder, sample_path):
    viewer, widget = viewer_and_builder
    build_pyramid(zarrurl=sample_path, num_levels=2)
    before = tree_snapshot(sample_path)
    layers = _open(viewer, sample_path)
    assert all(layer.multiscale for layer in layers)
    widget.num_levels.value = 2
    widget.overwrite.value = False

    message = _refusal(qtbot, widget, widget.build)

    assert "already multiscale with the 2 levels" in message
    assert "'overwrite'" in message
    assert tree_snapshot(sample_path) == before
    widget.overwrite.value = True
    assert _click_and_wait(qtbot, widget, widget.build) == "built"


def test_read_only_image_is_refused(qtbot, viewer_and_builder, sample_path):
    viewer, widget = viewer_and_builder
    _open(viewer, sample_path)
    widget.num_levels.value = 2
    before = tree_snapshot(sample_path)

    with read_only(sample_path):
        message = _refusal(qtbot, widget, widget.build)

    assert "is read-only" in message
    assert tree_snapshot(sample_path) == before


def test_levels_below_one_pixel_are_not_offered_and_bad_chunks_are_refused(
    qtbot, viewer_and_builder, sample_path
):
    viewer, widget = viewer_and_builder
    _open(viewer, sample_path)
    before = tree_snapshot(sample_path)

    # 512 -> 256 -> ... -> 1 px: ten levels; an eleventh would be below one pixel.
    assert widget.num_levels.max == 10
    with pytest.raises(ValueError, match="outside of the allowed range"):
        widget.num_levels.value = 11
    widget.num_levels.value = 10
    assert "level 9 (9): 2×4×1×1" in widget.summary.value
    widget.num_levels.value = 2
    widget.chunksize.value = "1,1,64"
    assert "has 3 numbers but the image has 4 axes" in _refusal(qtbot, widget, widget.build)
    assert tree_snapshot(sample_path) == before
    assert widget.preview_layers == ()


def test_names_from_metadata_are_shown_as_plain_text(qtbot, viewer_and_builder, tmp_path):
    path = write_sample_image(tmp_path / "<b>bold<i>.zarr", size=256, depth=1)
    build_pyramid(zarrurl=path, num_levels=2)
    viewer, widget = viewer_and_builder
    _open(viewer, path)
    widget.num_levels.value = 2

    message = _refusal(qtbot, widget, widget.build)

    assert "<b>bold<i>.zarr" in message
    for label in (widget.status, widget.info, widget.summary):
        assert label.native.textFormat() == Qt.TextFormat.PlainText
    # Said once: the summary shows the reason (as plain text), the status points at it.
    assert widget.summary.native.text() == f"Nothing to build as set: {message}"
    assert "summary above" in widget.status.native.text()
    shown = notification_manager.records[-1].message
    assert shown == notification_text(message)
    assert "<b>" not in shown
    document = QTextDocument()
    document.setHtml(shown)  # how Qt renders it: the entities show the original text
    assert document.toPlainText() == message


def test_a_bad_parameter_during_a_preview_removes_it_and_says_why(
    qtbot, viewer_and_builder, sample_path
):
    viewer, widget = viewer_and_builder
    sources = _open(viewer, sample_path)
    with qtbot.waitSignal(widget.events.preview_updated):
        widget.preview.clicked()

    with qtbot.waitSignal(widget.events.refused, timeout=5000) as refused:
        widget.chunksize.value = "1,1,64"  # the debounced refresh refuses it

    assert "has 3 numbers but the image has 4 axes" in refused.args[0]
    assert widget.preview_layers == ()
    assert list(viewer.layers) == sources
    assert all(layer.visible for layer in sources)


def test_renamed_layers_are_renamed_in_the_picker(viewer_and_builder, sample_path):
    viewer, widget = viewer_and_builder
    nuclei, _ = _open(viewer, sample_path)

    nuclei.name = "DAPI <i>"

    assert "DAPI <i>" in [widget.image.native.itemText(i) for i in range(2)]
    assert widget.image.value in (nuclei, viewer.layers[1])
