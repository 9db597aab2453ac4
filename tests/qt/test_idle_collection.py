"""Python's full garbage collections run in the viewer's quiet time, not in the next click."""

from __future__ import annotations

import gc
import sys
import time

import pytest
from qtpy.QtCore import QPoint, Qt
from qtpy.QtTest import QTest

from gates import GatedExecutor
from napari_pyramids._napari._qt import idle, sample_writer

pytestmark = pytest.mark.gui


class FullCollections:
    """Full collections run by an idle collection, as Python reports them: each is told by
    the ``_collect`` frame on the stack, and which collection it is by that frame's ``self``
    (a widget of an earlier test may still have its own)."""

    def __init__(self) -> None:
        self._runs: list[tuple[float, object]] = []
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict) -> None:
        if phase != "start" or info["generation"] != 2:
            return
        frame = sys._getframe(1)
        while frame is not None:
            code = frame.f_code
            if code.co_name == "_collect" and code.co_filename == idle.__file__:
                self._runs.append((time.perf_counter(), frame.f_locals.get("self")))
                return
            frame = frame.f_back

    def of(self, collection: idle.IdleCollection) -> list[float]:
        """When ``collection`` ran a full collection."""
        return [when for when, who in self._runs if who is collection]

    def close(self) -> None:
        gc.callbacks.remove(self._on_gc)


@pytest.fixture
def collections():
    recorder = FullCollections()
    yield recorder
    recorder.close()


def _preview(qtbot, viewer, widget, sample_path) -> float:
    """Open the sample, preview it and wait for its tiles; the time the widget went quiet."""
    viewer.open(str(sample_path), plugin="napari-pyramids")
    widget.num_levels.value = 3
    with qtbot.waitSignal(widget.events.preview_updated):
        widget.preview.clicked()
    qtbot.waitUntil(lambda: not widget._working(), timeout=30_000)
    return time.perf_counter()


def test_a_full_collection_runs_once_the_widget_is_quiet(
    qtbot, viewer_and_builder, sample_path, collections
):
    viewer, widget = viewer_and_builder
    quiet = _preview(qtbot, viewer, widget, sample_path)
    before = len(collections.of(widget._idle))
    qtbot.waitUntil(lambda: len(collections.of(widget._idle)) > before, timeout=5000)
    assert collections.of(widget._idle)[before] - quiet >= idle.IDLE_MS / 1000 * 0.9
    assert gc.get_count()[2] <= 1  # the oldest generation's count was emptied

    # Quiet stays quiet: with nothing new to collect no further collection runs.
    qtbot.wait(2 * idle.IDLE_MS)
    assert len(collections.of(widget._idle)) == before + 1


def test_no_collection_while_a_mouse_button_is_held(
    qtbot, viewer_and_builder, sample_path, collections
):
    viewer, widget = viewer_and_builder
    canvas = viewer.window._qt_viewer.canvas.native
    _preview(qtbot, viewer, widget, sample_path)
    before = len(collections.of(widget._idle))
    QTest.mousePress(canvas, Qt.MouseButton.LeftButton, pos=QPoint(20, 20))
    try:
        qtbot.wait(3 * idle.IDLE_MS)  # a drag on the canvas: no pause of 0.15 s in it
        assert len(collections.of(widget._idle)) == before
    finally:
        QTest.mouseRelease(canvas, Qt.MouseButton.LeftButton, pos=QPoint(20, 20))
    qtbot.waitUntil(lambda: len(collections.of(widget._idle)) > before, timeout=5000)


def test_no_collection_while_preview_tiles_are_computed(
    qtbot, viewer_and_builder, sample_path, collections
):
    viewer, widget = viewer_and_builder
    gated = GatedExecutor(free=0)
    widget.preview_executor = gated
    try:
        viewer.open(str(sample_path), plugin="napari-pyramids")
        with qtbot.waitSignal(widget.events.preview_updated):
            widget.preview.clicked()
        assert gated.held.wait(timeout=10)
        qtbot.wait(3 * idle.IDLE_MS)  # tiles still to come: the widget is not quiet
        assert collections.of(widget._idle) == []
        gated.gate.set()
        qtbot.waitUntil(lambda: bool(collections.of(widget._idle)), timeout=30_000)
    finally:
        gated.gate.set()
        widget._preview.close()  # no tile is asked of the executor once it is shut down
        gated.shutdown(wait=True)


def test_nothing_runs_while_the_collector_is_off(qtbot, collections):
    collection = idle.IdleCollection(idle_ms=50)
    gc.disable()
    try:
        collection.soon()
        qtbot.wait(500)
        assert collections.of(collection) == []
    finally:
        gc.enable()
    survivors = [[n] for n in range(50_000)]  # enough to age into the oldest generation
    collection.soon()
    qtbot.waitUntil(lambda: bool(collections.of(collection)), timeout=2000)
    del survivors


def test_the_sample_is_collected_after_it_is_written(qtbot, make_napari_viewer, collections):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-pyramids", "sample")
    qtbot.waitUntil(lambda: not sample_writer._RUNNING, timeout=60_000)
    written = time.perf_counter()
    [shared] = idle._SHARED
    qtbot.waitUntil(lambda: any(t > written for t in collections.of(shared)), timeout=5000)


def test_a_closed_widget_collects_no_more(qtbot, viewer_and_builder, collections):
    _, widget = viewer_and_builder
    collector = widget._idle
    widget._say("Ready")  # the widget's work asks for a collection in a second
    with qtbot.waitSignal(widget.native.destroyed):
        widget.native.deleteLater()
    qtbot.wait(2 * idle.IDLE_MS)
    assert collections.of(collector) == []
