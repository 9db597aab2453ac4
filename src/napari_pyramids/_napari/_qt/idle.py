"""Python's full garbage collection, run while the viewer is idle rather than in a click.

A napari session holds 300k+ Python objects. A full (generation 2) collection walks them
all, 0.15-0.2 s with the interpreter held, and Python starts one by itself once enough
objects have outlived the younger collections. Those pile up during the widget's own work
(a layer picked, a preview placed, layers reloaded, a sample written), so the collection
used to land in the next thing the user did: the first Preview click paid one every time
(0.15 s of 0.34-0.41 s; benchmarks/gui_latency.py). Collecting once the viewer has been quiet
for a second empties that count, and the next click finds nothing due.

Only Python's own collector is run, as napari runs it on every layer removal: nothing is
frozen or turned off, so no garbage is kept. While the collector is off (``gc.disable()``)
nothing is run.
"""

from __future__ import annotations

import gc
from collections.abc import Callable

from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import QApplication

__all__ = ["IDLE_MS", "IdleCollection", "collect_when_idle"]

IDLE_MS = 1000


class IdleCollection:
    """Run a full collection once ``busy()`` is false and nothing asked for :meth:`soon`
    for ``idle_ms``; a held mouse button (a drag on the canvas) waits too."""

    def __init__(self, busy: Callable[[], bool] | None = None, idle_ms: int = IDLE_MS) -> None:
        self._busy = busy
        self._closed = False
        # No Qt parent: a widget closed while a build finishes may still ask for soon(),
        # and a timer deleted with its parent would raise then; close() stops it instead.
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(idle_ms)
        self._timer.timeout.connect(self._collect)

    def soon(self) -> None:
        """Work that made many objects went on: collect after the next quiet ``idle_ms``."""
        if not self._closed:
            self._timer.start()

    def close(self, *_: object) -> None:
        """Collect no more (the widget it serves is gone)."""
        self._closed = True
        self._timer.stop()

    def _collect(self) -> None:
        pressed = QApplication.mouseButtons() != Qt.MouseButton.NoButton
        if pressed or (self._busy is not None and self._busy()):
            self._timer.start()
            return
        # Each collection of generation 1 counts one in generation 2's count, and a full one
        # resets it: at 0 nothing has aged into the oldest generation since the last.
        if gc.isenabled() and gc.get_count()[2] > 0:
            gc.collect()


_SHARED: list[IdleCollection] = []


def collect_when_idle() -> None:
    """:meth:`IdleCollection.soon` for work outside the widget (File > Open Sample)."""
    if not _SHARED:
        _SHARED.append(IdleCollection())
    _SHARED[0].soon()
