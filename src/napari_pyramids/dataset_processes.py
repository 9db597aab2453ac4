"""The images of a dataset built in worker processes.

Threads share one interpreter: on a plate of many small images the Python work around each
image (reading its metadata, planning, the journal, publishing) queues for the one GIL, and
the threads' hand-offs cost more CPU than the work (measured: 500,000 futex calls for 384
fields). Worker processes each run their own interpreter, so that work runs on every core.

Each worker is ``python -c`` importing this module (not :mod:`multiprocessing`, whose
``spawn`` re-imports the parent's ``__main__``: napari's, in the viewer), talking over its
standard input and output in pickled messages:

- parent to worker: the setup, then ``("job", job)`` for each image to build, ``("stop",)``
  to have every running build stop at its next block; the end of its input means stop too,
  so a worker whose parent is gone (killed) rolls its images back and exits.
- worker to parent: ``("progress", name, done, total)`` and ``("result", name, result)``.

A worker builds each image exactly as a driver thread does (``_Builder``: lock, journal,
publish, recovery), so a worker killed mid-image leaves it as an interrupted build does, and
the next run finishes it. Its warnings go to the inherited standard error; Ctrl-C reaches
the parent, which tells the workers to stop.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from .dataset_build import FAILED, ImageResult, _Builder, _Job
from .engine import make_executor

_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)
# The worker imports this very copy of the package (sys.path[0] set to its folder), not
# whatever the current folder or an older install would give.
_WORKER = (
    "import sys; sys.path[0] = sys.argv[1]; "
    "from napari_pyramids.dataset_processes import serve; serve()"
)
_PROTOCOL = pickle.HIGHEST_PROTOCOL


class WorkerProcesses:
    """``count`` worker processes sharing ``slots`` images at once and ``workers`` block
    workers; ``report(name, done, total)`` receives every image's progress."""

    def __init__(
        self, count: int, slots: int, workers: int, report: Callable[[str, int, int], Any]
    ) -> None:
        setup = {
            "slots": slots,
            "at_once": -(-slots // count),
            "workers": max(1, workers // count),
        }
        self.workers: list[_Worker] = []
        self.stopped = False
        try:
            for _ in range(count):
                self.workers.append(_Worker(setup, report))
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> WorkerProcesses:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, job: _Job) -> Future[ImageResult]:
        """Hand ``job`` to the worker with the fewest images under way (one that has ended,
        killed say, gets no more: its images fail; the others go on)."""
        alive = [w for w in self.workers if not w.ended] or self.workers
        return min(alive, key=lambda w: len(w.jobs)).submit(job)

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        for worker in self.workers:
            worker.send(("stop",))

    def close(self) -> None:
        """End every worker's input and wait for it (it exits once its images are done)."""
        for worker in self.workers:
            worker.close()


class _Worker:
    """One worker process and the thread that reads what it sends."""

    def __init__(self, setup: dict[str, int], report: Callable[[str, int, int], Any]) -> None:
        self.report = report
        self.lock = threading.Lock()
        # name -> (job, future) of every image it is building.
        self.jobs: dict[str, tuple[_Job, Future[ImageResult]]] = {}
        self.ended = False  # set by the reader once the worker is gone
        self.process = subprocess.Popen(
            [sys.executable, "-c", _WORKER, _PACKAGE_ROOT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            # Its warnings where ours go; nowhere when we have no stderr (pythonw.exe).
            stderr=None if sys.stderr is not None else subprocess.DEVNULL,
            creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),
        )
        self.send(setup)
        self.reader = threading.Thread(target=self._read, name="dataset-worker", daemon=True)
        self.reader.start()

    def send(self, message: Any) -> None:
        data = pickle.dumps(message, _PROTOCOL)
        with self.lock, contextlib.suppress(OSError, ValueError):
            # A worker that has ended cannot take it: its reader reports its images.
            self.process.stdin.write(data)
            self.process.stdin.flush()

    def submit(self, job: _Job) -> Future[ImageResult]:
        future: Future[ImageResult] = Future()
        future.set_running_or_notify_cancel()
        with self.lock:
            ended = self.ended
            if not ended:
                self.jobs[job.name] = (job, future)
        if ended:
            future.set_result(self._lost(job))
        else:
            self.send(("job", job))
        return future

    def _read(self) -> None:
        stream = self.process.stdout
        while True:
            try:
                message = pickle.load(stream)
            except (EOFError, OSError, pickle.UnpicklingError):
                break
            if message[0] == "progress":
                self.report(*message[1:])
            elif message[0] == "result":
                with self.lock:
                    _job, future = self.jobs.pop(message[1])
                future.set_result(message[2])
        # The worker has ended (or closed its output): whatever it was building is lost to
        # it; an image it left half built is rolled back by the next build of it.
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        with self.lock:
            self.ended = True
            lost, self.jobs = list(self.jobs.values()), {}
        for job, future in lost:
            future.set_result(self._lost(job))

    def _lost(self, job: _Job) -> ImageResult:
        code = self.process.poll()
        if code is None:
            how = "ended"
        elif code < 0:
            how = f"was stopped by signal {-code}"
        else:
            how = f"ended with exit status {code}"
        return ImageResult(
            job.name, job.path, job.is_label, FAILED, None,
            f"the worker process building it {how}; building again finishes it",
        )  # fmt: skip

    def close(self) -> None:
        with self.lock, contextlib.suppress(OSError):
            self.process.stdin.close()
        self.reader.join()
        self.process.wait()
        self.process.stdout.close()


def serve(inbox: IO[bytes] | None = None, outbox: IO[bytes] | None = None) -> None:
    """A worker process's main loop: build the images it is sent until its input ends."""
    # Ctrl-C in a terminal reaches every process of the job: the parent decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if inbox is None:
        inbox = sys.stdin.buffer
    if outbox is None:
        # Messages go to the original standard output; anything printed goes to stderr.
        outbox = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    setup = pickle.load(inbox)
    stop = threading.Event()
    lock = threading.Lock()

    def send(message: Any) -> None:
        data = pickle.dumps(message, _PROTOCOL)
        try:
            with lock:
                outbox.write(data)
                outbox.flush()
        except (OSError, ValueError):
            stop.set()  # the parent is gone: roll back and exit

    def progress(name: str, done: int, total: int) -> None:
        send(("progress", name, done, total))

    def finished(job: _Job, future: Future[ImageResult]) -> None:
        error = future.exception()
        if error is None:
            result = future.result()
        else:  # the builder turns every Exception into a result; this is worse (MemoryError)
            why = f"{type(error).__name__}: {error}"
            result = ImageResult(job.name, job.path, job.is_label, FAILED, None, why)
        send(("result", job.name, result))

    builder = _Builder(stop, progress, setup["slots"])
    with (
        make_executor(setup["workers"]) as executor,
        ThreadPoolExecutor(setup["at_once"], thread_name_prefix="dataset") as drivers,
    ):
        while True:
            try:
                message = pickle.load(inbox)
            except (EOFError, OSError):
                break
            if message[0] == "stop":
                stop.set()
            else:
                job = message[1]
                future = drivers.submit(builder.build, job, executor)
                future.add_done_callback(lambda f, job=job: finished(job, f))
        stop.set()
