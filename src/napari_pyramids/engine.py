"""The executor: block tasks on threads or a dask.distributed cluster, with progress and cancel.

Each block task reads one block of its stage's source level once, coarsens it level after
level in memory, and writes every level's whole chunks (shards) that the block covers. Blocks
of one stage never share an output chunk, so tasks need no coordination; stages run one after
the other because a later stage reads what an earlier one wrote.

The build is a generator (:func:`iter_build`) yielding :class:`Progress` after every block,
and in between as the blocks running on local threads report their parts (every block reports
at least :data:`BLOCK_PARTS` of them), in steps of at most 1/:data:`PROGRESS_STEPS` of the whole
build, so a caller can show progress a person can follow even for a build of one or two
blocks, and stop it between blocks; closing the generator cancels the build and leaves the
image exactly as it was.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import queue
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .changes import published_documents, record_of_build
from .documents import publish_documents
from .errors import BuildCancelled, ImageBusyError, PyramidError
from .images import open_image
from .ome.image import OmeZarrImage, parse_array_info, read_image, same_metadata
from .options import BuildOptions
from .pyramid.plan import PyramidPlan, Stage, plan_pyramid
from .pyramid.reduce import coarsen, output_length
from .storage import (
    BuildTransaction,
    ImageChanges,
    LevelArray,
    NewLevel,
    Store,
    open_level_array,
    open_store,
)

# How long to try reaching a scheduler named on the command line before saying so.
SCHEDULER_TIMEOUT = "10s"
# A block on a local thread reports its work in at least this many parts (a block may take
# minutes, and a build may be one or two blocks)...
BLOCK_PARTS = 32
# ...and the build yields its progress in steps of at least 1/PROGRESS_STEPS of its work,
# at most once per PART_INTERVAL seconds between block ends (no viewer shows more).
PROGRESS_STEPS = 200
PART_INTERVAL = 0.02
# The share of a block's work reported as its source is read and reduced; the rest as its
# levels are written.
READ_SHARE = 0.8


@dataclass(frozen=True)
class Progress:
    """Where a build is: ``done`` of ``total`` blocks, in ``phase``.

    ``part`` adds the blocks under way, in fractions of a block (threads only): the work
    done is ``done + part`` blocks.
    """

    done: int
    total: int
    phase: str  # "writing", "publishing" or "done"
    part: float = 0.0


@dataclass(frozen=True)
class BlockTask:
    """Everything a worker (thread or remote process) needs to run the blocks of one stage."""

    stage: Stage
    source: LevelArray
    targets: tuple[LevelArray, ...]
    factors: tuple[tuple[int, ...], ...]
    relative: tuple[tuple[int, ...], ...]
    aggregation: str | Callable[..., Any]
    edge: str
    write_empty_chunks: bool


def run_block(task: BlockTask, index: int, report: Callable[[float], Any] | None = None) -> int:
    """Read block ``index`` of the stage's source once and write its part of every level.

    ``report(fraction)`` is told the fractions of the block done as it goes (threads only).
    Without ``report`` each chunk is reduced in one go: the slabs only exist for progress.
    """
    region = task.stage.region(index)
    parts = BLOCK_PARTS if report is not None else 1
    report = report or _ignore
    block = _first_level(task, region, report, parts)
    for k, (target, relative) in enumerate(zip(task.targets, task.relative, strict=True)):
        if k:
            block = coarsen(block, task.factors[k], task.aggregation, task.edge)
        out = tuple(
            slice(r.start // f, r.start // f + n)
            for r, f, n in zip(region, relative, block.shape, strict=True)
        )
        target.write(out, block, task.write_empty_chunks)
        report((1 - READ_SHARE) / len(task.targets))
    return index


def _ignore(fraction: float) -> None:
    """A block's progress nobody follows (a remote worker's)."""


def _first_level(
    task: BlockTask,
    region: tuple[slice, ...],
    report: Callable[[float], Any] = _ignore,
    block_parts: int = BLOCK_PARTS,
) -> np.ndarray:
    """The block's first target level, reduced unit by unit when the source allows it.

    When the block covers whole source chunks (but at the array's far edge) and every chunk
    holds whole windows (chunk lengths divisible by the factors), each decoded chunk is
    reduced on its own into the output: the source block never sits whole in memory, and
    since windows never straddle chunks the values are the same. Callables get the whole
    block, as they may not be window-local.
    """
    factors, source = task.factors[0], task.source
    if (
        callable(task.aggregation)
        or any(c % f for c, f in zip(source.chunks, factors, strict=True))
        or not _covers_whole_chunks(region, source.chunks, source.shape)
    ):
        data = source.read(region)
        if callable(task.aggregation):
            report(READ_SHARE)
            return coarsen(data, factors, task.aggregation, task.edge)
        report(READ_SHARE / 2)
        return _coarsen_in_strips(data, factors, task, block_parts, READ_SHARE / 2, report)
    parts = math.prod(
        -(-(r.stop - r.start) // c) for r, c in zip(region, source.chunks, strict=True)
    )
    shape = tuple(
        output_length(r.stop - r.start, f, task.edge) for r, f in zip(region, factors, strict=True)
    )
    out = np.empty(shape, dtype=source.dtype)
    strips = -(-block_parts // parts)
    for offset, part in source.read_parts(region):
        reduced = _coarsen_in_strips(part, factors, task, strips, READ_SHARE / parts, report)
        out[
            tuple(
                slice(o // f, o // f + n)
                for o, f, n in zip(offset, factors, reduced.shape, strict=True)
            )
        ] = reduced
    return out


def _coarsen_in_strips(
    data: np.ndarray,
    factors: tuple[int, ...],
    task: BlockTask,
    strips: int,
    share: float,
    report: Callable[[float], Any],
) -> np.ndarray:
    """``data`` coarsened in up to ``strips`` slabs of whole windows, reporting ``share`` in all.

    Windows never straddle two slabs, so the values are those of one coarsening of the whole.
    """
    lengths = [output_length(n, f, task.edge) for n, f in zip(data.shape, factors, strict=True)]
    axis = int(np.argmax(lengths)) if lengths else 0
    count = min(strips, lengths[axis]) if lengths else 1
    if count <= 1:
        reduced = coarsen(data, factors, task.aggregation, task.edge)
        report(share)
        return reduced
    out = np.empty(lengths, dtype=data.dtype)
    bounds = [lengths[axis] * i // count for i in range(count + 1)]
    for start, stop in itertools.pairwise(bounds):
        f = factors[axis]
        source = [slice(None)] * data.ndim
        source[axis] = slice(start * f, min(stop * f, data.shape[axis]))
        target = [slice(None)] * data.ndim
        target[axis] = slice(start, stop)
        out[tuple(target)] = coarsen(data[tuple(source)], factors, task.aggregation, task.edge)
        report(share / count)
    return out


def _covers_whole_chunks(
    region: tuple[slice, ...], chunks: tuple[int, ...], shape: tuple[int, ...]
) -> bool:
    return all(
        r.start % c == 0 and (r.stop % c == 0 or r.stop == n)
        for r, c, n in zip(region, chunks, shape, strict=True)
    )


def block_tasks(plan: PyramidPlan, transaction: BuildTransaction) -> list[BlockTask]:
    """The stage tasks of a plan, reading level 0 in place and writing new levels unlisted."""
    image = plan.image
    arrays: dict[int, LevelArray] = {
        0: open_level_array(image.store, image.level0.path, image.level0)
    }
    for level in plan.new_levels:
        info = parse_array_info(level.path, image.zarr_format, level.document, level.path)
        arrays[level.index] = open_level_array(
            transaction.store, transaction.level_key(level.index), info
        )
    tasks = []
    for stage in plan.stages:
        base = plan.levels[stage.source].cumulative
        tasks.append(
            BlockTask(
                stage=stage,
                source=arrays[stage.source],
                targets=tuple(arrays[k] for k in stage.targets),
                factors=tuple(plan.levels[k].factors for k in stage.targets),
                relative=tuple(
                    tuple(c // b for c, b in zip(plan.levels[k].cumulative, base, strict=True))
                    for k in stage.targets
                ),
                aggregation=plan.aggregation,
                edge=plan.edge,
                write_empty_chunks=plan.write_empty_chunks,
            )
        )
    return tasks


def active_client() -> Any | None:
    """The dask.distributed client of this process, if one is active."""
    if "distributed" not in sys.modules:
        return None
    from distributed import default_client

    try:
        return default_client()
    except ValueError:
        return None


@contextlib.contextmanager
def make_executor(workers: int, scheduler: str | None = None) -> Iterator[Executor]:
    """Threads by default; a dask.distributed cluster when a client is active or named."""
    if scheduler is not None:
        try:
            from distributed import Client
        except ImportError:
            raise PyramidError(
                "a scheduler address needs dask.distributed: pip install distributed"
            ) from None
        try:
            client = Client(scheduler, timeout=SCHEDULER_TIMEOUT)
        except (OSError, TimeoutError, ValueError, TypeError) as exc:
            raise PyramidError(
                f"cannot reach a dask scheduler at {scheduler!r} ({type(exc).__name__}); "
                "check the address (e.g. tcp://host:8786) and that the scheduler is running"
            ) from None
        with client:
            yield client.get_executor(pure=False)
        return
    client = active_client()
    if client is not None:
        yield client.get_executor(pure=False)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pyramid") as pool:
        yield pool


def run_tasks(
    executor: Executor,
    tasks: list[BlockTask],
    in_flight: int,
    blocks: Sequence[Sequence[int]] | None = None,
    parts: bool = True,
) -> Generator[tuple[int, float], None, None]:
    """Run every block of every stage, at most ``in_flight`` at once.

    ``blocks`` restricts each stage to the block numbers listed for it (an update runs only
    the blocks whose write units depend on changed level-0 data). ``parts=False`` yields
    after whole blocks only, as on a cluster (a dataset build counts blocks of hundreds of
    images: parts of one would cost more to relay than they tell).

    Yields (blocks finished since the last yield, fraction of the running blocks done)
    after each block and, on local threads, whenever the running blocks' reported parts
    add up to another 1/:data:`PROGRESS_STEPS` of all the blocks (at most once per
    :data:`PART_INTERVAL`). Closing the generator stops
    submitting, cancels what has not started and waits for the blocks already running, so
    nothing writes into the build folder once it returns.
    """
    if not parts or not isinstance(executor, ThreadPoolExecutor):
        # A block on a remote worker cannot report its parts: whole blocks only.
        yield from _run_remote(executor, tasks, in_flight, blocks)
        return
    todos = [_todo(task, number, blocks) for number, task in enumerate(tasks)]
    total = sum(len(todo) for todo in todos)
    step = total / PROGRESS_STEPS
    # Parts and ends arrive in one queue, in the order each thread sent them: a block's
    # parts always come before its end.
    events: queue.SimpleQueue[tuple[tuple[int, int], float | Future[int]]] = queue.SimpleQueue()
    for number, (task, todo) in enumerate(zip(tasks, todos, strict=True)):
        under_way: dict[tuple[int, int], float] = {}
        pending: set[Future[int]] = set()
        submitted, shown, shown_at = 0, 0.0, 0.0
        try:
            while submitted < len(todo) or pending:
                while submitted < len(todo) and len(pending) < in_flight:
                    key = (number, submitted)
                    report = functools.partial(_put_part, events, key)
                    future = executor.submit(run_block, task, todo[submitted], report)
                    future.add_done_callback(functools.partial(_put_end, events, key))
                    pending.add(future)
                    under_way[key] = 0.0
                    submitted += 1
                key, event = events.get()
                if isinstance(event, Future):
                    event.result()
                    pending.discard(event)
                    under_way.pop(key, None)
                    shown = _running_part(under_way)
                    yield 1, shown
                elif key in under_way:
                    under_way[key] += event
                    part = _running_part(under_way)
                    now = time.monotonic()
                    if part - shown >= step and now - shown_at >= PART_INTERVAL:
                        shown, shown_at = part, now
                        yield 0, part
        finally:
            for future in pending:
                future.cancel()
            wait(pending)


def _put_part(events: queue.SimpleQueue[Any], key: tuple[int, int], fraction: float) -> None:
    """Tell the build a block under way did ``fraction`` more of its work."""
    events.put((key, fraction))


def _put_end(events: queue.SimpleQueue[Any], key: tuple[int, int], future: Future[int]) -> None:
    """Tell the build a block ended (done, failed or cancelled)."""
    events.put((key, future))


def _running_part(under_way: Mapping[tuple[int, int], float]) -> float:
    """The blocks under way, in blocks: each counts less than a whole until it has ended."""
    return sum(min(done, 0.999) for done in under_way.values())


def _todo(task: BlockTask, number: int, blocks: Sequence[Sequence[int]] | None) -> Sequence[int]:
    """The block numbers of ``task`` (stage ``number``) to run: all, or those listed."""
    return range(task.stage.n_blocks) if blocks is None else blocks[number]


def _run_remote(
    executor: Executor,
    tasks: list[BlockTask],
    in_flight: int,
    blocks: Sequence[Sequence[int]] | None = None,
) -> Generator[tuple[int, float], None, None]:
    """:func:`run_tasks` on a dask.distributed cluster: progress after each whole block."""
    for number, task in enumerate(tasks):
        todo = _todo(task, number, blocks)
        pending: set[Future[int]] = set()
        submitted = 0
        try:
            while submitted < len(todo) or pending:
                while submitted < len(todo) and len(pending) < in_flight:
                    pending.add(executor.submit(run_block, task, todo[submitted]))
                    submitted += 1
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    future.result()
                    yield 1, 0.0
        finally:
            for future in pending:
                future.cancel()
            wait(pending)


def iter_build(
    zarrurl: str | Path | Store | OmeZarrImage,
    options: BuildOptions | None = None,
    *,
    executor: Executor | None = None,
    scheduler: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    block_parts: bool = True,
    **params: Any,
) -> Generator[Progress, None, PyramidPlan]:
    """Build a pyramid, yielding progress after each block; returns the plan it carried out.

    ``zarrurl`` may also be an image already opened with
    :func:`~napari_pyramids.images.open_image` (a dataset build has read it to see whether it
    is complete): its metadata is then not read again before the lock.
    ``options`` are the build's :class:`~napari_pyramids.options.BuildOptions` (or, instead,
    their keywords as ``params``); ``storage_options`` configure an image given by URL;
    ``block_parts=False`` yields after whole blocks only (see :func:`run_tasks`). The
    image is planned (every input checked) before anything is written, then locked, cleared
    of any interrupted build, read again under the lock (and planned again unless that read
    found the metadata the plan was made from, with nothing interrupted to clear), written,
    and published. Closing the generator early cancels the build and restores the image.
    """
    if options is None:
        options = BuildOptions(**params)
    elif params:
        raise TypeError("iter_build takes BuildOptions or their keywords, not both")
    if isinstance(zarrurl, OmeZarrImage):
        image, store = zarrurl, zarrurl.store
        store.check_writable()
    else:
        store = open_store(zarrurl, storage_options)
        store.check_writable()
        image = open_image(store)
    try:
        plan: PyramidPlan | None = plan_pyramid(image, options)
    except PyramidError:
        # Levels an interrupted build published look like existing levels until its
        # journal is replayed, which needs the lock: decide there (and clean up).
        if not store.has_leftovers():
            raise
        plan = None
    if plan is not None and not plan.new_levels:
        return plan
    build_id = uuid.uuid4().hex[:12]
    with store.lock(build_id) as hold:
        recovered = store.recover()
        # Another build may have published or left something since the plan was made: plan
        # from the metadata read under the lock, unless it is what the plan was made from.
        locked = read_image(store)
        if plan is None or recovered or not same_metadata(locked, plan.image):
            plan = plan_pyramid(locked, options)
        if not plan.new_levels:
            return plan
        aside = [*plan.replaced, *(p for p in plan.dropped if store.exists(p))]
        _check_level0_untouched(plan, aside)
        documents = publish_documents(plan, aside)
        # Level 0 as it is before the build reads it: a later change shows in the record.
        record = record_of_build(
            plan, options, published_documents(plan, documents.final, rewritten=True)
        )
        changes = ImageChanges(
            metadata_file=plan.image.metadata_file,
            zarr_format=plan.image.zarr_format,
            levels=[NewLevel(lv.index, lv.path, lv.document) for lv in plan.new_levels],
            aside=aside,
            intermediate=documents.intermediate,
            final=documents.final,
            extra_files=documents.extra_files,
            consolidated=documents.consolidated,
            record=record,
        )
        transaction = store.begin_build(build_id, changes)
        try:
            transaction.create()
            yield from _write_levels(plan, transaction, executor, scheduler, block_parts)
            yield Progress(plan.total_blocks, plan.total_blocks, "publishing")
            if not hold.holds():
                raise ImageBusyError(
                    f"{store.describe()}: this build lost its lease on the image (it was stopped "
                    "past the lease's expiry and another build took over); nothing was published. "
                    "Run again once that build is done."
                )
            transaction.publish()
        except OSError as exc:
            raise store.write_error(exc) from exc
        finally:
            # A build that lost its lease leaves the undo to the build that took over.
            if not transaction.committed and _still_held(hold):
                _undo(store)
        transaction.finish()
    yield Progress(plan.total_blocks, plan.total_blocks, "done")
    return plan


def _check_level0_untouched(plan: PyramidPlan, aside: list[str]) -> None:
    """Refuse a plan that would move or replace level 0 (or a folder holding it)."""
    level0 = plan.levels[0].path
    for path in [*aside, *(lv.path for lv in plan.new_levels)]:
        if path == level0 or level0.startswith(path + "/") or path.startswith(level0 + "/"):
            raise PyramidError(
                f"new level {path!r} would replace or nest in level 0 {level0!r}; level 0 is "
                "never written. Rename level 0's folder (e.g. to '0') and its metadata entry."
            )


def _still_held(hold: Any) -> bool:
    """Whether the build still holds the image; when that cannot be told, assume it does."""
    try:
        return bool(hold.holds())
    except (OSError, PyramidError):
        return True


def _undo(store: Store) -> None:
    """Roll back an unfinished build; if even that fails, the next build will."""
    try:
        store.recover()
    except PyramidError as exc:
        warnings.warn(
            f"{store.describe()}: the interrupted build could not be undone yet ({exc}); the "
            "image lists only complete levels, and the next build of it finishes the undo",
            stacklevel=3,
        )


def _write_levels(
    plan: PyramidPlan,
    transaction: BuildTransaction,
    executor: Executor | None,
    scheduler: str | None,
    block_parts: bool = True,
) -> Generator[Progress, None, None]:
    tasks = block_tasks(plan, transaction)
    done, total = 0, plan.total_blocks
    yield Progress(done, total, "writing")
    context = (
        contextlib.nullcontext(executor) if executor else make_executor(plan.workers, scheduler)
    )
    with context as pool:
        for finished, part in run_tasks(pool, tasks, plan.workers, parts=block_parts):
            done += finished
            yield Progress(done, total, "writing", part)


def run_build(
    gen: Generator[Progress, None, PyramidPlan],
    progress: Callable[[int, int], Any] | None = None,
    cancel: Callable[[], bool] | Any | None = None,
) -> PyramidPlan:
    """Drive :func:`iter_build` to the end, reporting progress and honouring ``cancel``.

    ``cancel`` is a callable returning True to stop, or anything with ``is_set()`` such as a
    :class:`threading.Event`; it is checked after every block.
    """
    should_stop = cancel.is_set if hasattr(cancel, "is_set") else cancel
    reported = -1
    try:
        while True:
            step = next(gen)
            # Called once per block, as documented; the steps in between are for viewers.
            if progress is not None and step.phase == "writing" and step.done != reported:
                reported = step.done
                progress(step.done, step.total)
            if should_stop is not None and step.phase == "writing" and should_stop():
                gen.close()
                raise BuildCancelled("the build was cancelled; the image is unchanged")
    except StopIteration as stop:
        return stop.value
