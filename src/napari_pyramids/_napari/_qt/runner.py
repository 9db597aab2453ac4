"""The build runner: one build at a time in a thread worker, its progress, cancel and end.

It starts the worker, reports progress (coalesced, to napari's activity dock too), asks the
worker to stop on cancel, and tells how the build ended once the worker has stopped. After a
build, :func:`reload_layers` swaps the image's layers for the pyramid read back from disk.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

from napari.components import LayerList
from napari.layers import Layer
from napari.utils import progress as napari_progress
from napari.utils.notifications import show_error
from psygnal import Signal
from qtpy.QtCore import QTimer

from ...engine import Progress
from ...options import BuildOptions
from ..layers import CHANNEL_KEY, PATH_KEY, layer_data
from ..picker import channel_of, layer_source, source_layers
from ..preview import display_state
from ..texts import CANCELLED, built_text, failure_reason, progress_text
from .text import notification_text
from .worker import BuildWorker, build_worker

# Progress is shown at most this often (each repaint recomposes the window), and at the
# latest this long after the engine reported it: 25 updates in a 2 s build, given the engine's
# steps (at least 32 a block). Shown in steps of 1/BLOCK_STEPS of a block, so that a build of
# two big blocks still moves in small steps.
PROGRESS_MS = 80
BLOCK_STEPS = 100


@dataclass(frozen=True)
class BuildEnd:
    """How a build ended: ``outcome`` is "built", "cancelled" or "failed"; ``message`` says it."""

    outcome: str
    root: Path
    message: str


class BuildRunner:
    """Runs builds in a thread worker, one at a time.

    ``progressed(done, total, text)`` reports a step, in 1/:data:`BLOCK_STEPS` of a block
    (``text`` empty: keep the status as it is); ``finished(BuildEnd)`` is emitted once the
    worker has stopped.
    """

    progressed = Signal(int, int, str)
    finished = Signal(BuildEnd)

    def __init__(self) -> None:
        self.worker: BuildWorker | None = None
        self._root: Path | None = None
        self._error: BaseException | None = None
        self._pbar: napari_progress | None = None
        self._step: Progress | None = None
        self._shown_at = 0.0
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(PROGRESS_MS)
        self._timer.timeout.connect(self._show_progress)

    @property
    def running(self) -> bool:
        """Whether a build is running."""
        return self.worker is not None and self.worker.is_running

    def start(
        self, root: Path, options: BuildOptions, total_blocks: int, executor: Executor | None
    ) -> None:
        """Build the pyramid of the image at ``root`` in a new thread worker."""
        self._error = None
        worker = build_worker(str(root), options, executor=executor)
        worker.yielded.connect(self._on_progress)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self.worker, self._root = worker, root
        self._pbar = napari_progress(total=total_blocks * BLOCK_STEPS, desc="Building pyramid")
        worker.start()

    def cancel(self) -> bool:
        """Ask the running build to stop (the image is restored before it ends); False if none."""
        if self.worker is None or not self.worker.is_running:
            return False
        self.worker.quit()
        return True

    def _on_progress(self, step: Progress) -> None:
        # Repaints are coalesced: every one recomposes the whole window (the OpenGL canvas
        # included), which costs tens of ms with software rendering.
        self._step = step
        wait_ms = PROGRESS_MS - (time.monotonic() - self._shown_at) * 1000
        if step.phase != "writing" or wait_ms <= 0:
            self._timer.stop()
            self._show_progress()
        elif not self._timer.isActive():
            self._timer.start(max(1, round(wait_ms)))

    def _show_progress(self) -> None:
        step = self._step
        if step is None:
            return
        self._shown_at = time.monotonic()
        cancelling = self.worker is not None and self.worker.abort_requested
        done = round((step.done + step.part) * BLOCK_STEPS)
        total = step.total * BLOCK_STEPS
        self.progressed.emit(done, total, progress_text(step, cancelling) or "")
        # The activity dock shows every value the widget shows. Last: napari's bar processes
        # events as it updates, so the build's end may be handled
        # inside this call; nothing of this (older) step may be shown after it.
        if self._pbar is not None:
            self._pbar.total = total
            self._pbar.update(done - self._pbar.n)

    def _on_error(self, exc: BaseException) -> None:
        self._error = exc

    def _on_finished(self) -> None:
        worker, root = self.worker, self._root
        if worker is None or root is None:  # only a worker started by start() reports here
            return
        self._timer.stop()
        self._step = None
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        if worker.plan is not None:
            end = BuildEnd("built", root, built_text(worker.plan, root, worker.abort_requested))
        elif self._error is not None:
            reason = failure_reason(self._error)
            end = BuildEnd("failed", root, f"Build failed: {reason}")
            show_error(notification_text(f"Pyramid build failed: {reason}"))
        else:
            end = BuildEnd("cancelled", root, CANCELLED)
        self.finished.emit(end)


def reload_layers(layers: LayerList, root: Path) -> list[tuple[Layer, Layer]]:
    """Show the pyramid of ``root`` read back from disk in the layers that show it.

    Each layer keeps its identity, place and look: its data is swapped for the levels on
    disk, one layer change instead of a removal and an insertion. A layer whose kind or
    dimensions differ from what is on disk is replaced instead. Returns (old, new) pairs
    (the same layer twice when it was refreshed in place).
    """
    fresh = [d for d in layer_data(root) if d[1]["metadata"][PATH_KEY] == str(root)]
    if not fresh:
        return []
    swapped = []
    for position, old in enumerate(source_layers(layers, root)):
        index = channel_of(old, position)
        match = [d for d in fresh if d[1]["metadata"][CHANNEL_KEY] in (index, None)]
        data, kwargs, kind = (match or fresh)[0]
        levels = data if kwargs["multiscale"] else [data]
        if old._type_string == kind and old.ndim == levels[0].ndim:
            old.multiscale = kwargs["multiscale"]  # napari reads it in the data setter
            old.data = data
            old.metadata = {**old.metadata, **kwargs["metadata"]}
            swapped.append((old, old))
            continue
        kwargs = {**kwargs, **display_state(old)}
        with layer_source(path=os.fspath(root), reader_plugin="napari-pyramids"):
            new = Layer.create(data, kwargs, kind)
        where = layers.index(old)
        layers.remove(old)
        layers.insert(where, new)
        swapped.append((old, new))
    return swapped
