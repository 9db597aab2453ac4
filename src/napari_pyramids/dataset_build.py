"""Building every image of a dataset: a plate, a well, a collection, a folder of images, or
one image with its labels, with the same parameters, in parallel, within one memory budget.

Each image is an ordinary build (:func:`~napari_pyramids.engine.iter_build`): planned, locked,
written and published on its own, so a refused or failed image leaves the others alone, and
an interrupted run leaves every image either as it was or complete. Running the same command
again skips the complete images (their levels already have the planned shapes), rolls back
what an interrupted build left, and builds the rest.

Images run ``images_at_once`` at a time, each with its share of the memory budget and of the
block workers: on driver threads over one executor (threads, or the dask cluster), or, for a
dataset of many images, in worker processes (:mod:`~napari_pyramids.dataset_processes`) that
each build their share with their own interpreter. Once an image is built its
label images are built to as many levels, with a label-safe method (mode unless the method
asked for keeps label ids).
"""

from __future__ import annotations

import collections
import contextlib
import os
import queue
import sys
import threading
import warnings
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from .datasets import Dataset, DatasetImage, find_images, labels_out_of_step
from .engine import Progress, iter_build, make_executor
from .errors import BuildCancelled, MemoryBudgetError, PyramidError
from .images import open_image
from .ome.image import OmeZarrImage, read_array_info
from .options import MIN_MEMORY_BUDGET, BuildOptions
from .pyramid.plan import choose_method, level_factors, level_shapes, num_levels_for
from .storage import Store, open_store
from .system import cpu_count

BUILT = "built"
COMPLETE = "already complete"
REFUSED = "refused"
FAILED = "failed"
CANCELLED = "cancelled"
SKIPPED = "skipped"
# Not a result: the image's blocks need more than its share of the budget; it runs again
# alone, with the whole budget, once the images sharing it are done.
_NEEDS_WHOLE_BUDGET = "needs the whole budget"
# An image built alongside others gets at least this much of the budget: below it, the blocks
# of a 1024 x 1024 uint16 chunk no longer fit and images would only queue for memory.
MIN_SHARE = 32 * 2**20
IMAGES_AT_ONCE = 8
# Worker processes: each runs its own interpreter, so the Python work of many small images
# (planning, metadata, publishing) runs on every core instead of queueing for one GIL.
# Starting one costs about 0.3 s of CPU; below this many images each it does not pay.
PROCESS_IMAGES = 16
MAX_PROCESSES = 8
# Images one worker process builds at once: two overlap one image's waits for the disk
# with the other's work (measured on a plate of 2 x 1024 x 1024 fields: 2 faster than 1 or 4).
IMAGES_PER_PROCESS = 2


@dataclass(frozen=True)
class ImageResult:
    """What happened to one image of a dataset.

    ``status`` is one of ``built``, ``already complete``, ``refused`` (its metadata or the
    parameters were refused; ``message`` says why and what to do), ``failed`` (an unexpected
    error, e.g. a full disk), ``cancelled`` or ``skipped`` (labels of an image not built).
    """

    name: str
    path: Path
    is_label: bool
    status: str
    levels: int | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status in (BUILT, COMPLETE)


@dataclass(frozen=True)
class DatasetProgress:
    """Where a dataset build is: images finished of those found, blocks written of those
    planned so far (the total grows as images are planned), and the image just finished."""

    images_done: int
    images_total: int
    blocks_done: int
    blocks_total: int
    finished: ImageResult | None = None


@dataclass
class DatasetReport:
    """Every image's result, in the dataset's order, and whether the run was cancelled."""

    dataset: Dataset
    results: list[ImageResult] = field(default_factory=list)
    cancelled: bool = False

    @property
    def ok(self) -> bool:
        """True when every image is built or was already complete."""
        return not self.cancelled and all(r.ok for r in self.results)

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    def table(self) -> str:
        """The summary a person reads: one row per image, then the totals."""
        return summary_table(self.results, self.cancelled)


def summary_table(results: list[ImageResult], cancelled: bool = False) -> str:
    """One row per image (name, status, levels, reason), then a line of totals."""
    rows = [("image", "status", "levels", "")]
    for r in results:
        rows.append((r.name, r.status, "-" if r.levels is None else str(r.levels), r.message))
    widths = [max(len(row[k]) for row in rows) for k in range(3)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True))
        + (f"  {row[3]}" if row[3] else "")
        for row in rows
    ]
    counts = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    order = (BUILT, COMPLETE, REFUSED, FAILED, CANCELLED, SKIPPED)
    totals = ", ".join(f"{counts[s]} {s}" for s in order if s in counts)
    noun = "image" if len(results) == 1 else "images"
    lines.append(f"{len(results)} {noun}: {totals}" + ("; interrupted" if cancelled else ""))
    return "\n".join(line.rstrip() for line in lines)


def build_dataset(
    path: str | os.PathLike[str] | Dataset,
    options: BuildOptions | None = None,
    *,
    with_labels: bool = True,
    images_at_once: int | None = None,
    progress: Callable[[DatasetProgress], Any] | None = None,
    cancel: Callable[[], bool] | Any | None = None,
    scheduler: str | None = None,
    executor: Executor | None = None,
    processes: int | None = None,
    **params: Any,
) -> DatasetReport:
    """Build the pyramid of every image under ``path``, and of their label images.

    Parameters
    ----------
    path
        An image, a plate, a well, a bioformats2raw collection, a labels group, or a folder
        holding any of those (or what :func:`~napari_pyramids.datasets.find_images` found).
    options
        The build's :class:`~napari_pyramids.options.BuildOptions`, the same for every
        image; or, instead, their keywords as ``params`` (``num_levels="auto"``, ...).
        ``memory_budget`` bounds the whole run, ``workers`` its parallel blocks.
    with_labels
        Build each image's label images to as many levels as the image (default). Label
        images take the method asked for if it keeps label ids (mode, nearest, min, max),
        else mode, and the chunk shape asked for if they have as many axes.
    images_at_once
        How many images build at the same time, each with that share of the memory budget
        and of the workers; default: enough to keep the workers busy between the images'
        own pauses (locking, flushing, publishing): 8, or twice the workers if more, and at
        most one image per 32 MiB of budget. An image whose chunks need more than its share
        is built alone afterwards, with the whole budget.
    progress
        Called with a :class:`DatasetProgress` after every block and every finished image.
    cancel
        A callable returning True (or a ``threading.Event`` set) stops every running build
        at its next block (each is left as it was) and skips the others.
    scheduler, executor
        Run the block tasks on a dask.distributed scheduler at this address or on an
        executor, as in :func:`~napari_pyramids.build_pyramid`.
    processes
        How many worker processes build the images, each with its own Python interpreter,
        its share of the images at once, of the workers and of the memory budget; 1 builds
        them all in this process. Default: one per worker (at most 8) when the dataset has
        at least 16 images per process, else 1. Unused with ``scheduler`` or ``executor``.

    Returns
    -------
    DatasetReport
        Every image's result; ``report.ok`` says whether all are built or were complete.
        A refused or failed image never stops the others.

    Raises
    ------
    PyramidError
        If ``path`` holds no image, its own metadata is malformed, or an option is invalid.
    """
    if options is None:
        options = BuildOptions(**params)
    elif params:
        raise TypeError("build_dataset takes BuildOptions or their keywords, not both")
    dataset = path if isinstance(path, Dataset) else find_images(path)
    if executor is not None or scheduler is not None:
        processes = 1
    run = _DatasetRun(dataset, options, with_labels, images_at_once, progress, cancel, processes)
    if executor is not None:
        with _DriverThreads(run.builder, run.slots, executor) as threads:
            return run.run(threads)
    if run.processes > 1:
        from .dataset_processes import WorkerProcesses

        try:
            workers = WorkerProcesses(run.processes, run.slots, run.workers, run._step)
        except OSError as exc:
            warnings.warn(
                f"worker processes could not be started ({exc}); building the images in "
                "this process",
                stacklevel=2,
            )
        else:
            with workers:
                return run.run(workers)
    with (
        make_executor(run.workers, scheduler) as pool,
        _DriverThreads(run.builder, run.slots, pool) as threads,
    ):
        return run.run(threads)


class ImageRunner(Protocol):
    """Where the images of a run are built: driver threads here, or worker processes."""

    def submit(self, job: _Job) -> Future[ImageResult]:
        """Start building ``job``; the future never fails (failures are results)."""

    def stop(self) -> None:
        """Have every running build stop at its next block (roll back) and report."""


class _DriverThreads:
    """Images built on driver threads of this process, their blocks on ``executor``."""

    def __init__(self, builder: _Builder, slots: int, executor: Executor) -> None:
        self.builder = builder
        self.executor = executor
        self.drivers = ThreadPoolExecutor(slots, thread_name_prefix="dataset")

    def __enter__(self) -> _DriverThreads:
        return self

    def __exit__(self, *exc: object) -> None:
        self.drivers.shutdown(wait=True)

    def submit(self, job: _Job) -> Future[ImageResult]:
        return self.drivers.submit(self.builder.build, job, self.executor)

    def stop(self) -> None:
        """Nothing to pass on: the builds share the run's stop flag."""


def _check_count(name: str, value: object) -> None:
    """Refuse a count of images or processes that is not a whole number >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PyramidError(f"{name} must be an integer >= 1, got {value!r}")


def processes_for(images: int, options: BuildOptions, asked: int | None) -> int:
    """How many worker processes build the images of a dataset (1: this process alone)."""
    if asked is not None:
        _check_count("processes", asked)
        if asked > 1 and options.aggregation_function is not None:
            raise PyramidError(
                "a custom aggregation function cannot be sent to worker processes; "
                "build with processes=1 (CLI: --processes 1)"
            )
        return max(1, min(asked, images))
    workers = options.workers if options.workers is not None else cpu_count()
    if options.aggregation_function is not None or getattr(sys, "frozen", False):
        # A function may not pickle, and a frozen application cannot start a Python.
        return 1
    most = options.memory_budget // (MIN_SHARE * IMAGES_PER_PROCESS)
    return max(1, min(workers, MAX_PROCESSES, images // PROCESS_IMAGES, most))


def slots_for(images: int, options: BuildOptions, asked: int | None, processes: int = 1) -> int:
    """How many images build at once: each gets an equal share of the budget and workers."""
    workers = options.workers if options.workers is not None else cpu_count()
    most = max(1, options.memory_budget // MIN_SHARE)
    if processes > 1 and asked is None:
        return max(1, min(images, processes * IMAGES_PER_PROCESS, most))
    if asked is not None:
        _check_count("images_at_once", asked)
        most = max(1, options.memory_budget // MIN_MEMORY_BUDGET)
        return max(1, min(asked, images, most))
    # A small image spends most of its time waiting for the disk (its lock, journal, flush
    # and publish each wait for an fsync): eight of them overlap those waits on any machine
    # (measured on a plate of 2 x 1024 x 1024 fields: 4 at once took 1.5x as long as 8, 16
    # no less than 8), and more workers keep twice their number busy.
    return max(1, min(images, max(IMAGES_AT_ONCE, 2 * workers), most))


def share_of(options: BuildOptions, slots: int) -> BuildOptions:
    """The options of one image among ``slots`` building at once."""
    workers = options.workers if options.workers is not None else cpu_count()
    return replace(
        options,
        memory_budget=max(MIN_MEMORY_BUDGET, options.memory_budget // slots),
        workers=max(1, workers // slots),
    )


def label_options(options: BuildOptions, num_levels: int) -> BuildOptions:
    """The options of a label image built with its image: as many levels, a label-safe method."""
    method = options.chosen_method
    keep = method is not None and method.label_safe and options.aggregation_function is None
    return replace(
        options,
        num_levels=num_levels,
        method=options.method if keep else None,
        aggregation_function=None,
        labels=None,
    )


def pyramid_complete(image: OmeZarrImage, options: BuildOptions) -> bool:
    """Whether ``image`` already lists the levels a build with ``options`` would write.

    The shapes must match level for level; with ``overwrite`` the levels must also have been
    built by napari-pyramids with the same method, factors and edge (so that re-running an
    overwriting build skips what it has already rebuilt).
    """
    try:
        factors = level_factors(image, options)
        count = num_levels_for(image, options, factors)
        shapes = level_shapes(image, count, factors, options.edge)
        method, _ = choose_method(image, options)
    except PyramidError:
        return False
    if not image.has_multiscales or len(image.level_paths) != count:
        return False
    try:
        for path, shape in zip(image.level_paths[1:], shapes[1:], strict=True):
            if read_array_info(image.store, path, image.zarr_format).shape != shape:
                return False
    except PyramidError:
        return False
    if not options.overwrite:
        return True
    metadata = image.multiscale.get("metadata")
    kwargs = metadata.get("kwargs") if isinstance(metadata, dict) else None
    expected = {
        "method": method.name,
        "num_levels": count,
        "coarsening_xy": options.coarsening_xy,
        "coarsening_z": options.coarsening_z if image.z_axis is not None else 1,
        "edge": options.edge,
    }
    return isinstance(kwargs, dict) and all(kwargs.get(k) == v for k, v in expected.items())


@dataclass(frozen=True)
class _Job:
    """One image to build, with the options it gets and the labels that follow it."""

    entry: DatasetImage
    name: str
    path: Path
    is_label: bool
    options: BuildOptions
    labels: tuple[str, ...] = ()
    alone: bool = False


class _DatasetRun:
    """The state of one dataset build: jobs, results, progress events, the stop flag."""

    def __init__(
        self,
        dataset: Dataset,
        options: BuildOptions,
        with_labels: bool,
        images_at_once: int | None,
        progress: Callable[[DatasetProgress], Any] | None,
        cancel: Callable[[], bool] | Any | None,
        processes: int | None = None,
    ) -> None:
        self.dataset = dataset
        self.options = options
        self.with_labels = with_labels
        self.workers = options.workers if options.workers is not None else cpu_count()
        self.processes = processes_for(len(dataset.images), options, processes)
        self.slots = slots_for(len(dataset.images), options, images_at_once, self.processes)
        self.processes = min(self.processes, self.slots)  # none idle
        self.share = share_of(options, self.slots)
        self.progress = progress
        self.should_stop = cancel.is_set if hasattr(cancel, "is_set") else cancel
        self.stop = threading.Event()
        # (image name, blocks done, blocks planned), from the image builds (on driver threads
        # or in worker processes) to the caller's thread.
        self.events: queue.Queue[tuple[str, int, int]] = queue.Queue()
        self.builder = _Builder(self.stop, self._step, self.slots, self.should_stop)
        self.total = sum(1 + (len(e.labels) if with_labels else 0) for e in dataset.images)
        self.results: dict[str, ImageResult] = {}
        # Jobs wait here, not in the driver pool: waiting on a few futures is cheap, on
        # thousands it costs more than a small image's build.
        self.pending: collections.deque[_Job] = collections.deque()
        self.deferred: list[_Job] = []
        self.blocks: dict[str, tuple[int, int]] = {}

    def _step(self, name: str, done: int, total: int) -> None:
        self.events.put((name, done, total))

    def run(self, runner: ImageRunner) -> DatasetReport:
        """Build every image (then its labels), ``slots`` at a time on ``runner``; never
        raises for one image's sake."""
        report = DatasetReport(self.dataset)
        order = []
        for entry in self.dataset.images:
            job = self._job(entry)
            order.append(job.name)
            order.extend(entry.label_name(n) for n in job.labels)
            self.pending.append(job)
        running: dict[Future[ImageResult], _Job] = {}
        try:
            self._wait(runner, running)
        except BaseException:
            # Ctrl-C (or any error here): every running build stops at its next block and
            # rolls back; none that has not started starts.
            self.stop.set()
            runner.stop()
            for future in running:
                future.cancel()
            wait(running)
            raise
        report.cancelled = self.stop.is_set()
        report.results = [self.results[name] for name in order if name in self.results]
        for name in order:
            if name not in self.results:
                report.results.append(
                    ImageResult(name, self.dataset.root / name, False, CANCELLED)
                )
        return report

    def _job(self, entry: DatasetImage) -> _Job:
        """The job of an image of the dataset (a label image on its own keeps label options)."""
        options = label_options(self.share, self.share.num_levels) if entry.is_label else None
        labels = entry.labels if self.with_labels else ()
        return _Job(entry, entry.name, entry.path, entry.is_label, options or self.share, labels)

    def _wait(self, runner: ImageRunner, running: dict[Future[ImageResult], _Job]) -> None:
        """Collect finished images, start their labels and the deferred images, relay progress
        and the caller's cancel, until nothing is left to run."""
        while running or self.pending or self.deferred:
            while self.pending and len(running) < self.slots:
                job = self.pending.popleft()
                if self.stop.is_set():
                    self._finished(ImageResult(job.name, job.path, job.is_label, CANCELLED))
                else:
                    running[runner.submit(job)] = job
            if not running and self.deferred:
                # Every image sharing the budget is done: the next one needing it all runs.
                job = self.deferred.pop(0)
                if self.stop.is_set():
                    self._finished(ImageResult(job.name, job.path, job.is_label, CANCELLED))
                else:
                    running[runner.submit(job)] = job
                continue
            done, _ = wait(running, timeout=0.1, return_when=FIRST_COMPLETED)
            self._drain()
            if self.should_stop is not None and not self.stop.is_set() and self.should_stop():
                self.stop.set()
            if self.stop.is_set():
                runner.stop()
            for future in done:
                job = running.pop(future)
                result = future.result() if not future.cancelled() else None
                if result is None:
                    result = ImageResult(job.name, job.path, job.is_label, CANCELLED)
                if result.status == _NEEDS_WHOLE_BUDGET:
                    self.deferred.append(
                        replace(job, options=self._whole(job.options), alone=True)
                    )
                    continue
                self._finished(result)
                # Labels next: their image's levels are fresh in the page cache.
                self.pending.extendleft(reversed(list(self._label_jobs(job, result))))
        self._drain()

    def _whole(self, options: BuildOptions) -> BuildOptions:
        """``options`` with the whole budget and every worker (an image built alone)."""
        return replace(options, memory_budget=self.options.memory_budget, workers=self.workers)

    def _label_jobs(self, job: _Job, result: ImageResult) -> Iterator[_Job]:
        """The label images of a finished image, to its number of levels; skipped unless it
        is built or complete."""
        for label in job.labels:
            name, path = job.entry.label_name(label), job.entry.label_path(label)
            if result.status == CANCELLED:
                self._finished(ImageResult(name, path, True, CANCELLED))
                continue
            if not result.ok or result.levels is None:
                self._finished(
                    ImageResult(name, path, True, SKIPPED, None, "its image was not built")
                )
                continue
            yield _Job(job.entry, name, path, True, label_options(self.share, result.levels))

    def _finished(self, result: ImageResult) -> None:
        self.results[result.name] = result
        self._report(result)

    def _drain(self) -> None:
        """Apply the progress the image builds sent, and tell the caller."""
        changed = False
        with contextlib.suppress(queue.Empty):
            while True:
                name, done, total = self.events.get_nowait()
                self.blocks[name] = (done, total)
                changed = True
        if changed:
            self._report(None)

    def _report(self, finished: ImageResult | None) -> None:
        if self.progress is None:
            return
        done = sum(d for d, _ in self.blocks.values())
        total = sum(t for _, t in self.blocks.values())
        self.progress(DatasetProgress(len(self.results), self.total, done, total, finished))


class _Builder:
    """Builds one image of a dataset at a time on the calling thread, never raising for its
    sake; shared by the driver threads of a run and by its worker processes."""

    def __init__(
        self,
        stop: threading.Event,
        report: Callable[[str, int, int], Any],
        slots: int,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        self.stop = stop
        self.report = report
        self.slots = slots
        self.should_stop = should_stop

    def _stopping(self) -> bool:
        """Whether the run is stopping; the caller's cancel is checked here too, as each block
        lands, so that no image publishes after a cancel the driver loop has not polled yet."""
        if not self.stop.is_set() and self.should_stop is not None and self.should_stop():
            self.stop.set()
        return self.stop.is_set()

    def build(self, job: _Job, executor: Executor) -> ImageResult:
        """One image, start to end, on a driver thread; never raises."""
        if self.stop.is_set():
            return ImageResult(job.name, job.path, job.is_label, CANCELLED)
        if job.entry.problem is not None and job.path == job.entry.path:
            return ImageResult(job.name, job.path, job.is_label, REFUSED, None, job.entry.problem)
        try:
            return self._build_image(job, executor)
        except BuildCancelled:
            return ImageResult(job.name, job.path, job.is_label, CANCELLED)
        except MemoryBudgetError as exc:
            if job.alone or self.slots == 1:
                return self._refused(job, exc)
            return ImageResult(job.name, job.path, job.is_label, _NEEDS_WHOLE_BUDGET)
        except PyramidError as exc:
            return self._refused(job, exc)
        except Exception as exc:
            return ImageResult(
                job.name, job.path, job.is_label, FAILED, None, f"{type(exc).__name__}: {exc}"
            )

    def _build_image(self, job: _Job, executor: Executor) -> ImageResult:
        """Skip a complete image, else build it through the engine, relaying its progress."""
        image = open_image(job.path)
        options = job.options
        if options.chunksize is not None and len(options.chunksize) != image.ndim and job.is_label:
            options = replace(options, chunksize=None)
        if not image.store.has_leftovers() and pyramid_complete(image, options):
            return ImageResult(job.name, job.path, job.is_label, COMPLETE, len(image.level_paths))
        build = iter_build(image, options, executor=executor, block_parts=False)
        try:
            while True:
                step: Progress = next(build)
                self.report(job.name, step.done, step.total)
                if step.phase == "writing" and self._stopping():
                    build.close()
                    raise BuildCancelled
        except StopIteration as stop:
            plan = stop.value
        finally:
            build.close()
        note = ""
        if job.alone:
            note = f"built alone: its blocks need more than 1/{self.slots} of the memory budget"
        return ImageResult(job.name, job.path, job.is_label, BUILT, len(plan.levels), note)

    def _refused(self, job: _Job, exc: PyramidError) -> ImageResult:
        """A refusal, unless the image turns out complete (an interrupted run published it)."""
        with contextlib.suppress(PyramidError):
            image = open_image(job.path)
            if not image.store.has_leftovers() and pyramid_complete(image, job.options):
                return ImageResult(
                    job.name, job.path, job.is_label, COMPLETE, len(image.level_paths)
                )
        return ImageResult(job.name, job.path, job.is_label, REFUSED, None, str(exc))


def labels_warnings(report: DatasetReport) -> list[str]:
    """A line for every label image left with a different number of levels than its image."""
    lines: dict[Path, str] = {}
    for result in report.results:
        if not result.ok:
            continue
        with contextlib.suppress(PyramidError):
            if not _has_or_is_label_image(open_store(result.path)):
                continue
            for mismatch in labels_out_of_step(open_image(result.path)):
                lines.setdefault(mismatch.label, mismatch.message)
    return list(lines.values())


def _has_or_is_label_image(store: Store) -> bool:
    """Whether an image has a ``labels`` group or sits in one; without either it has no
    label image to compare, and its metadata need not be read again to say so."""
    parent = store.parent()
    return store.exists("labels") or (parent is not None and parent.name() == "labels")


_END = object()


def iter_build_dataset(
    path: str | os.PathLike[str] | Dataset,
    options: BuildOptions,
    *,
    with_labels: bool = True,
    cancel: Callable[[], bool] | Any | None = None,
    executor: Executor | None = None,
) -> Generator[DatasetProgress, None, DatasetReport]:
    """:func:`build_dataset` as a generator: yields its progress, returns its report.

    The build runs in a thread of its own, so the caller (a napari worker, say) gets each
    :class:`DatasetProgress` as it comes and can stop at any step. ``cancel`` stops the
    build as in :func:`build_dataset` and the report says what was built; closing the
    generator early stops it too, and returns only once every running image is rolled back.
    """
    events: queue.Queue[Any] = queue.Queue()
    stop = threading.Event()
    outcome: dict[str, Any] = {}

    def stopped() -> bool:
        if stop.is_set():
            return True
        if cancel is None:
            return False
        return bool(cancel.is_set() if hasattr(cancel, "is_set") else cancel())

    def run() -> None:
        try:
            outcome["report"] = build_dataset(
                path, options, with_labels=with_labels, progress=events.put, cancel=stopped,
                executor=executor,
            )  # fmt: skip
        except BaseException as exc:  # handed to the caller's thread below
            outcome["error"] = exc
        finally:
            events.put(_END)

    thread = threading.Thread(target=run, name="dataset-build", daemon=True)
    thread.start()
    try:
        while (step := events.get()) is not _END:
            yield step
    finally:
        stop.set()
        thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["report"]
