"""The build of several images (an image with its labels, a plate...) in a thread worker.

The library's dataset build runs in the worker's thread; its progress over images (and
blocks) comes back coalesced, to napari's activity dock too. Cancel asks the dataset build
to stop: running images roll back, those built stay built, and the report says which.
Afterwards :func:`reload_dataset_layers` shows the new levels: layers of built images are
read back from disk, and layers showing the dataset whole (napari-ome-zarr's plate) are read
again by the reader that opened them.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari.components import LayerList
from napari.layers import Layer
from napari.layers.utils.stack_utils import split_channels
from napari.plugins.io import read_data_with_plugins
from napari.qt.threading import create_worker
from napari.utils import progress as napari_progress
from psygnal import Signal
from qtpy.QtCore import QTimer

from ...dataset_build import BUILT, DatasetProgress, DatasetReport, iter_build_dataset
from ...options import BuildOptions
from ..dataset_texts import dataset_end_text, dataset_failure_text, dataset_progress_text
from ..picker import layer_source, root_or_none
from ..preview import display_state
from ..texts import failure_reason
from .runner import reload_layers
from .worker import BuildWorker

PROGRESS_MS = 200


@dataclass(frozen=True)
class DatasetEnd:
    """How a dataset build ended: ``outcome`` is "built", "cancelled" or "failed" (an image
    refused or failed, or the run stopped on an error); ``report`` is None if it never ran."""

    outcome: str
    path: Path
    message: str
    report: DatasetReport | None


class DatasetRunner:
    """Runs dataset builds in a thread worker, one at a time.

    ``progressed(done, total, text)`` reports images done of those found (``text`` empty:
    keep the status); ``finished(DatasetEnd)`` is emitted once the worker has stopped.
    """

    progressed = Signal(int, int, str)
    finished = Signal(DatasetEnd)

    def __init__(self) -> None:
        self.worker: BuildWorker | None = None
        self._path: Path | None = None
        self._cancel = threading.Event()
        self._report: DatasetReport | None = None
        self._error: BaseException | None = None
        self._pbar: napari_progress | None = None
        self._step: DatasetProgress | None = None
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(PROGRESS_MS)
        self._timer.timeout.connect(self._show_progress)

    @property
    def running(self) -> bool:
        """Whether a dataset build is running."""
        return self.worker is not None and self.worker.is_running

    def start(
        self,
        path: Path,
        options: BuildOptions,
        with_labels: bool,
        total_images: int,
        executor: Executor | None,
    ) -> None:
        """Build every image under ``path`` (and their labels if ``with_labels``)."""
        self._cancel = threading.Event()
        self._report, self._error, self._path = None, None, path
        worker = create_worker(
            iter_build_dataset,
            path,
            options,
            with_labels=with_labels,
            cancel=self._cancel,
            executor=executor,
            _start_thread=False,
            _worker_class=BuildWorker,  # closes the generator on quit(): images roll back
            _ignore_errors=True,
        )
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self._pbar = napari_progress(total=total_images, desc=f"Building {path.name}")
        worker.start()

    def cancel(self) -> bool:
        """Ask the running build to stop at the next block of each image; False if none."""
        if not self.running:
            return False
        self._cancel.set()
        return True

    def _on_progress(self, step: DatasetProgress) -> None:
        self._step = step
        if step.finished is not None:
            self._show_progress()
        elif not self._timer.isActive():
            self._timer.start()

    def _show_progress(self) -> None:
        step = self._step
        if step is None:
            return
        text = dataset_progress_text(step, self._cancel.is_set())
        self.progressed.emit(step.images_done, step.images_total, text or "")
        if self._pbar is not None:  # last: it processes events (see BuildRunner)
            self._pbar.total = step.images_total
            self._pbar.update(step.images_done - self._pbar.n)

    def _on_returned(self, report: Any) -> None:
        self._report = report

    def _on_error(self, exc: BaseException) -> None:
        self._error = exc

    def _on_finished(self) -> None:
        path, report = self._path, self._report
        if path is None:
            return
        self._timer.stop()
        self._step = None
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        if report is None:
            reason = failure_reason(self._error) if self._error else "stopped"
            end = DatasetEnd("failed", path, dataset_failure_text(reason), None)
        elif report.cancelled:
            end = DatasetEnd("cancelled", path, dataset_end_text(report), report)
        else:
            outcome = "built" if report.ok else "failed"
            end = DatasetEnd(outcome, path, dataset_end_text(report), report)
        self.finished.emit(end)


def reload_dataset_layers(
    layers: LayerList, report: DatasetReport, shown_whole: Path | None
) -> list[tuple[Layer, Layer]]:
    """Show the new levels: swap the layers of every built image for its pyramid read back
    from disk, and read the layers showing ``shown_whole`` (a plate) again with their reader.

    Returns the (old, new) layer pairs.
    """
    built = {r.path for r in report.results if r.status == BUILT}
    shown = {root_or_none(layer) for layer in layers}
    swapped = []
    for root in sorted(p for p in built & shown if p is not None):
        swapped += reload_layers(layers, root)
    if shown_whole is not None and built:
        swapped += reread_layers(layers, shown_whole)
    return swapped


def reread_layers(layers: LayerList, path: Path) -> list[tuple[Layer, Layer]]:
    """Read the layers whose source is ``path`` (and no image of ours) again with the reader
    that opened them, each new layer in the place and with the look of the old one."""
    old = [
        layer for layer in layers if layer.source.path == str(path) and root_or_none(layer) is None
    ]
    if not old:
        return []
    plugin = old[0].source.reader_plugin
    read, _ = read_data_with_plugins([os.fspath(path)], plugin=plugin)
    fresh = [data for entry in read or [] for data in _split(entry)]
    if len(fresh) != len(old):  # the reader's idea of the dataset changed: keep what we had
        return []
    swapped = []
    for layer, (data, kwargs, kind) in zip(old, fresh, strict=True):
        kwargs = {**kwargs, **display_state(layer)}
        with layer_source(path=os.fspath(path), reader_plugin=plugin):
            new = Layer.create(data, kwargs, kind)
        where = layers.index(layer)
        layers.remove(layer)
        layers.insert(where, new)
        swapped.append((layer, new))
    return swapped


def _split(entry: tuple[Any, ...]) -> list[tuple[Any, dict[str, Any], str]]:
    """A reader's layer data as one (data, kwargs, kind) per napari layer (channels apart)."""
    data = entry[0]
    kwargs = dict(entry[1]) if len(entry) > 1 else {}
    kind = entry[2] if len(entry) > 2 else "image"
    axis = kwargs.pop("channel_axis", None)
    if kind != "image" or axis is None:
        return [(data, kwargs, kind)]
    return [(d, dict(k), t) for d, k, t in split_channels(data, axis, **kwargs)]
