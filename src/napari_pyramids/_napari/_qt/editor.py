"""Paint, then update: the widget's label editing, wired to :mod:`..editing`.

:class:`LabelEditor` adds the **Edit labels** and **Update pyramid** buttons (children
``edit`` and ``update``) and a status line (``edits``) to the Pyramid Builder. It follows
every editable Labels layer (:func:`~..editing.edit_target`), writes each stroke to level 0
when napari reports it (the ``paint`` event), runs the update of the painted regions in a
thread worker, reloads the image's layers after it, and says when a pyramid is older than
its level 0 (polled from the change record: one listing of level 0's units).

Before a build or update starts, :meth:`LabelEditor.write_edits_under` writes any edit of
that image still not on disk (an undo, a stroke whose write failed); if that fails, the
build does not start.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import PushButton
from napari.layers import Labels, Layer
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error
from psygnal import Signal
from qtpy.QtCore import QTimer

from ...errors import PyramidError
from ...images import open_image
from ...update import iter_update
from ..edit_texts import (
    NOT_LABELS,
    UPDATE_BUSY,
    UPDATE_CANCELLED,
    editing_text,
    stale_text,
    unsaved_write_failed,
    updated_text,
    write_failed,
    written_text,
)
from ..editing import LabelEdits, edit_layer_data, edit_region, edit_target, level0_changed
from ..picker import root_or_none
from ..texts import failure_reason
from .text import notification_text, plain_label
from .worker import BuildWorker

if TYPE_CHECKING:
    from .widget import PyramidBuilder

STALE_POLL_MS = 2000


class LabelEditor:
    """The label-editing part of the Pyramid Builder.

    ``updated(outcome)`` is emitted once an update ended ("updated", "unchanged",
    "rebuilt" or "failed") and the layers show its result; ``written`` once the strokes
    painted so far were written to level 0.
    """

    updated = Signal(str)
    written = Signal()  # painted strokes were written to level 0 (or said why not)

    def __init__(self, builder: PyramidBuilder, viewer: Any) -> None:
        self._builder = builder
        self._viewer = viewer
        self.sessions: dict[int, LabelEdits] = {}
        self.worker: BuildWorker | None = None
        self._updating_root: Path | None = None
        self._updating_sessions: list[tuple[LabelEdits, int]] = []
        self._error: BaseException | None = None
        at = builder.index(builder["cancel"]) + 1
        builder.insert(at, PushButton(name="edit", label="", text="Edit labels"))
        builder.insert(at + 1, PushButton(name="update", label="", text="Update pyramid"))
        builder.insert(at + 2, plain_label("edits"))
        builder["edits"]._labeled_widget()._label_widget.visible = False
        builder["edit"].clicked.connect(self.open_edit_layer)
        builder["update"].clicked.connect(self.start_update)
        viewer.layers.events.inserted.connect(lambda e: self._follow(e.value))
        viewer.layers.events.removed.connect(lambda e: self.sessions.pop(id(e.value), None))
        for layer in viewer.layers:
            self._follow(layer)
        # Timers belong to the widget: they stop when it is closed.
        self._write_soon = QTimer(builder.native)
        self._write_soon.setSingleShot(True)
        self._write_soon.setInterval(0)
        self._write_soon.timeout.connect(self._write_painted)
        self._poll = QTimer(builder.native)
        self._poll.setInterval(STALE_POLL_MS)
        self._poll.timeout.connect(self.check_stale)
        self._poll.start()

    @property
    def running(self) -> bool:
        return self.worker is not None and self.worker.is_running

    # ----------------------------------------------------------------- following layers
    def _follow(self, layer: Layer) -> None:
        if not isinstance(layer, Labels) or id(layer) in self.sessions:
            return
        target = edit_target(layer)
        if target is None:
            return
        session = LabelEdits(layer, target)
        self.sessions[id(layer)] = session
        layer.events.paint.connect(lambda event: self._on_paint(session, event.value))

    def _on_paint(self, session: LabelEdits, atoms: Any) -> None:
        # napari emits ``paint`` before it changes the data: write once the edit is done.
        if session.record(atoms):
            self._write_soon.start()

    def _write_painted(self) -> None:
        """Write every stroke painted since the last write to level 0."""
        for session in list(self.sessions.values()):
            if not session.unwritten:
                continue
            try:
                written = session.write()
            except (PyramidError, OSError) as exc:
                self._say(write_failed(session.target.root, failure_reason(exc)))
                continue
            if written:
                self._say(written_text(session.target.root))
        self.written.emit()

    # ----------------------------------------------------------------- Edit labels
    def open_edit_layer(self, *_: Any) -> Layer | None:
        """Add a Labels layer holding level 0 of the plane (or region) in view of the picked
        multiscale labels layer, for painting; returns it (None: refused)."""
        picked = self._builder.image.value
        root = root_or_none(picked)
        if not isinstance(picked, Labels) or root is None or not picked.multiscale:
            self._builder._refuse(NOT_LABELS)
            return None
        try:
            image = open_image(root)
        except PyramidError as exc:
            self._builder._refuse(str(exc))
            return None
        level0 = picked.data[0]
        point = picked.world_to_data(self._viewer.dims.point)
        displayed = list(picked._slice_input.displayed)
        box = edit_region(level0.shape, point, displayed, _view_box(picked))
        data, kwargs, _ = edit_layer_data(
            image, level0, box, picked.name, picked.scale, picked.translate, picked.axis_labels
        )
        layer = Labels(data, **kwargs)
        self._viewer.add_layer(layer)
        self._viewer.layers.selection.active = layer
        layer.mode = "paint"
        self._say(editing_text(layer.name, data.shape))
        return layer

    # ----------------------------------------------------------------- writing edits
    def write_edits_under(self, path: Path) -> bool:
        """Write every edit of an image under ``path`` not yet in its level 0; False (and
        said, nothing started) if one cannot be written."""
        for session in list(self.sessions.values()):
            root = session.target.root
            if root != path and not root.is_relative_to(path):
                continue
            try:
                if session.unwritten or session.differs_from_disk():
                    session.write()
            except (PyramidError, OSError) as exc:
                self._builder._refuse(unsaved_write_failed(root, failure_reason(exc)))
                return False
        return True

    # ----------------------------------------------------------------- Update pyramid
    def start_update(self, *_: Any) -> None:
        """Write pending edits, then refresh the picked image's pyramid in a thread worker:
        for the regions painted here, or else for every change the record finds."""
        builder = self._builder
        if builder.writing:
            builder._refuse(UPDATE_BUSY)
            return
        root = root_or_none(builder.image.value)
        if root is None:
            builder._refuse("Pick an image whose pyramid to update.")
            return
        if not self.write_edits_under(root):
            return
        sessions = [s for s in self.sessions.values() if s.target.root == root]
        # The regions painted here, exactly; with none, the change record finds every change.
        regions = [box for s in sessions for box in s.to_update] or None
        self._updating_sessions = [(s, len(s.to_update)) for s in sessions]
        self._error = None
        worker = create_worker(
            iter_update,
            os.fspath(root),
            regions,
            workers=builder.workers,
            memory_budget=builder.memory_budget,
            executor=builder.executor,
            _start_thread=False,
            _worker_class=BuildWorker,
            _ignore_errors=True,
        )
        worker.yielded.connect(lambda step: builder._on_progress(step.done, step.total, ""))
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self.worker, self._updating_root = worker, root
        self._set_running(True)
        self._say(f"Updating the pyramid of {root.name}…")
        worker.start()

    def cancel_update(self) -> bool:
        """Ask the running update to stop at its next block; False if none runs."""
        if self.worker is None or not self.worker.is_running:
            return False
        self.worker.quit()
        return True

    def _on_error(self, exc: BaseException) -> None:
        self._error = exc

    def _on_finished(self) -> None:
        worker, root = self.worker, self._updating_root
        if worker is None or root is None:
            return
        self._set_running(False)
        report = worker.plan
        if report is None and self._error is None and worker.abort_requested:
            self._builder.progress.value = 0
            self._say(UPDATE_CANCELLED)
            self.updated.emit("cancelled")
            return
        if report is None:
            reason = failure_reason(self._error) if self._error else "cancelled"
            message = f"Update failed: {reason}"
            show_error(notification_text(message))
            self._say(message)
            self.updated.emit("failed")
            return
        for session, count in self._updating_sessions:
            del session.to_update[:count]
        self._builder._show_built(root)
        self._say(updated_text(root, report.describe()))
        self.updated.emit(report.status)

    def _set_running(self, running: bool) -> None:
        for name in ("build", "preview", "edit", "update"):
            self._builder[name].enabled = not running
        self._builder.cancel.enabled = running

    # ----------------------------------------------------------------- staleness
    def check_stale(self) -> bool:
        """Say whether the picked image's pyramid is older than its level 0; returns it."""
        if self._builder.writing:
            return False
        root = root_or_none(self._builder.image.value)
        stale = root is not None and bool(level0_changed(root))
        if stale and root is not None:
            self._say(stale_text(root))
        elif root is not None and self._builder["edits"].value.startswith("The pyramid of"):
            self._say("")
        return stale

    def _say(self, text: str) -> None:
        self._builder["edits"].value = text


def _view_box(layer: Labels) -> tuple[slice, ...] | None:
    """The level-0 box of ``layer`` in view (napari's corner pixels at the level shown)."""
    try:
        corners = layer.corner_pixels
        factors = layer.downsample_factors[layer.data_level]
    except (AttributeError, IndexError):
        return None
    return tuple(
        slice(int(lo * f), int((hi + 1) * f))
        for lo, hi, f in zip(corners[0], corners[1], factors, strict=True)
    )
