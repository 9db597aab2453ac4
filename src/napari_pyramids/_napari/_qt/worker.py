"""The build in a napari thread worker: the engine's progress generator, run off the UI thread.

Only this module knows that the engine runs in a Qt thread. The worker closes the engine's
generator in the worker thread when it stops for any reason, so a Cancel (``quit()``) ends
with the image restored before ``finished`` is emitted.
"""

from __future__ import annotations

from concurrent.futures import Executor
from typing import Any

from napari.qt.threading import GeneratorWorker, create_worker

from ...engine import iter_build
from ...options import BuildOptions
from ..sample_data import wait_for_sample


class BuildWorker(GeneratorWorker):
    """A GeneratorWorker that closes its generator and records whether the build completed.

    Unlike the stock worker, it closes the generator on ``quit()`` (so the engine cancels
    and restores the image in this thread, before ``finished``), reports a RuntimeError
    from the engine through ``errored`` like any other error, and keeps the plan of a
    build that completed in :attr:`plan` even if a late ``quit()`` suppressed ``returned``.
    """

    plan: Any = None

    def work(self) -> Any:
        """Run the generator to its end or until ``quit()``; close it in every case."""
        step = None
        try:
            while True:
                # After "done" the pyramid is published: a Cancel arriving then comes too
                # late, and closing the generator there would report a finished build as
                # cancelled (and skip reloading it).
                if self.abort_requested and getattr(step, "phase", None) != "done":
                    self.aborted.emit()
                    return None
                try:
                    step = next(self._gen)
                except StopIteration as stop:
                    self.plan = stop.value
                    return stop.value
                self.yielded.emit(step)
        finally:
            self._gen.close()


def _build_when_written(zarrurl: str, options: BuildOptions, executor: Executor | None) -> Any:
    """:func:`iter_build`, once a sample still being written is whole on disk."""
    wait_for_sample(zarrurl)
    return (yield from iter_build(zarrurl, options, executor=executor))


def build_worker(
    zarrurl: str, options: BuildOptions, executor: Executor | None = None
) -> BuildWorker:
    """A worker (not started) running :func:`~napari_pyramids.engine.iter_build`.

    Connect its signals, then call ``start()``.
    """
    return create_worker(
        _build_when_written,
        zarrurl,
        options,
        executor=executor,
        _start_thread=False,
        _worker_class=BuildWorker,
        _ignore_errors=True,
    )
