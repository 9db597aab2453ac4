"""The executor: block tasks on threads or a dask.distributed cluster, with progress and cancel.

Each block task reads one block of its stage's source level once, coarsens it level after
level in memory, and writes every level's whole chunks (shards) that the block covers. Blocks
of one stage never share an output chunk, so tasks need no coordination; stages run one after
the other because a later stage reads what an earlier one wrote.

The build is a generator (:func:`iter_build`) yielding :class:`Progress` after every block,
so a caller can show progress and stop it between blocks; closing the generator cancels the
build and leaves the image exactly as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sys
import uuid
import warnings
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BuildCancelled, PyramidError
from .ome.image import open_image
from .ome.metadata import group_document_with, multiscale_with_levels
from .options import BuildOptions
from .pyramid.plan import PyramidPlan, Stage, plan_pyramid
from .pyramid.reduce import coarsen, output_length
from .storage.chunkio import ChunkArray, open_chunk_array
from .storage.transaction import (
    BuildFolder,
    ImageLock,
    encode_json,
    has_leftovers,
    recover,
    storage_error,
)

# How long to try reaching a scheduler named on the command line before saying so.
SCHEDULER_TIMEOUT = "10s"


@dataclass(frozen=True)
class Progress:
    """Where a build is: ``done`` of ``total`` blocks, in ``phase``."""

    done: int
    total: int
    phase: str  # "writing", "publishing" or "done"


@dataclass(frozen=True)
class BlockTask:
    """Everything a worker (thread or remote process) needs to run the blocks of one stage."""

    stage: Stage
    source: str
    targets: tuple[str, ...]
    factors: tuple[tuple[int, ...], ...]
    relative: tuple[tuple[int, ...], ...]
    aggregation: str | Callable[..., Any]
    edge: str
    write_empty_chunks: bool


def _metadata_stamp(path: str) -> tuple[int, int]:
    """Changes whenever the array's metadata is rewritten, so caches never serve stale arrays."""
    for name in (".zarray", "zarr.json"):
        try:
            info = os.stat(os.path.join(path, name))
        except FileNotFoundError:
            continue
        return info.st_mtime_ns, info.st_ino
    return 0, 0


@functools.lru_cache(maxsize=32)
def _open_array(
    path: str, writable: bool, write_empty_chunks: bool, stamp: tuple[int, int]
) -> Any:
    # zarr-python is only needed for layouts chunkio does not read; importing it costs
    # ~0.1 s of every build's start-up otherwise.
    if not writable:
        from .storage.zarrread import open_array_checked

        # Chunk files come from strangers: refuse /dev/zero links, FIFOs and giant files.
        return open_array_checked(path)
    import zarr
    from zarr.storage import LocalStore

    array = zarr.open_array(store=LocalStore(path), mode="r+")
    # open_array drops its ``config`` argument when the array exists (zarr 3.1): set it after.
    return array.with_config({"write_empty_chunks": write_empty_chunks})


@functools.lru_cache(maxsize=32)
def _open_direct(path: str, stamp: tuple[int, int]) -> ChunkArray | None:
    return open_chunk_array(path)


def read_region(path: str, region: tuple[slice, ...]) -> np.ndarray:
    """The values of ``region`` of the array at ``path``: chunk files directly when possible."""
    stamp = _metadata_stamp(path)
    direct = _open_direct(path, stamp)
    if direct is not None:
        return direct.read(region)
    return np.asarray(_open_array(path, False, False, stamp)[region])


def write_region(
    path: str, region: tuple[slice, ...], data: np.ndarray, write_empty_chunks: bool
) -> None:
    """Write whole chunks of the array at ``path``: chunk files directly when possible."""
    stamp = _metadata_stamp(path)
    direct = _open_direct(path, stamp)
    if direct is not None:
        direct.write(region, data, write_empty_chunks)
        return
    try:
        _open_array(path, True, write_empty_chunks, stamp)[region] = data
    except BaseException:
        _settle_zarr_writes()
        raise


def run_block(task: BlockTask, index: int) -> int:
    """Read block ``index`` of the stage's source once and write its part of every level."""
    region = task.stage.region(index)
    block = _first_level(task, region)
    for k, (target, relative) in enumerate(zip(task.targets, task.relative, strict=True)):
        if k:
            block = coarsen(block, task.factors[k], task.aggregation, task.edge)
        out = tuple(
            slice(r.start // f, r.start // f + n)
            for r, f, n in zip(region, relative, block.shape, strict=True)
        )
        write_region(target, out, block, task.write_empty_chunks)
    return index


def _first_level(task: BlockTask, region: tuple[slice, ...]) -> np.ndarray:
    """The block's first target level, reduced chunk by chunk when the source allows it.

    When the block covers whole source chunks (but at the array's far edge) and every chunk
    holds whole windows (chunk lengths divisible by the factors), each decoded chunk is
    reduced on its own into the output: the source block never sits whole in memory, and
    since windows never straddle chunks the values are the same. Callables get the whole
    block, as they may not be window-local.
    """
    factors = task.factors[0]
    direct = _open_direct(task.source, _metadata_stamp(task.source))
    if (
        direct is None
        or callable(task.aggregation)
        or any(c % f for c, f in zip(direct.chunks, factors, strict=True))
        or not _covers_whole_chunks(region, direct.chunks, direct.shape)
    ):
        block = read_region(task.source, region) if direct is None else direct.read(region)
        return coarsen(block, factors, task.aggregation, task.edge)
    shape = tuple(
        output_length(r.stop - r.start, f, task.edge) for r, f in zip(region, factors, strict=True)
    )
    out = np.empty(shape, dtype=direct.dtype)
    for offset, part in direct.read_parts(region):
        reduced = coarsen(part, factors, task.aggregation, task.edge)
        out[
            tuple(
                slice(o // f, o // f + n)
                for o, f, n in zip(offset, factors, reduced.shape, strict=True)
            )
        ] = reduced
    return out


def _covers_whole_chunks(
    region: tuple[slice, ...], chunks: tuple[int, ...], shape: tuple[int, ...]
) -> bool:
    return all(
        r.start % c == 0 and (r.stop % c == 0 or r.stop == n)
        for r, c, n in zip(region, chunks, shape, strict=True)
    )


def _settle_zarr_writes() -> None:
    """Wait for the chunk writes zarr still runs after one of them failed.

    zarr gathers the chunk writes of one assignment without cancelling the others when one
    fails (a full disk, say): they go on writing, and would recreate the build folder after
    the failed build has removed it. Only once they are done may the build be undone.
    """
    try:
        from zarr.core.sync import sync
    except ImportError:  # pragma: no cover - a zarr without this module
        return

    async def others_done() -> None:
        current = asyncio.current_task()
        others = [t for t in asyncio.all_tasks() if t is not current]
        await asyncio.gather(*others, return_exceptions=True)

    with contextlib.suppress(Exception):
        sync(others_done(), timeout=120)


def block_tasks(plan: PyramidPlan, folder: BuildFolder) -> list[BlockTask]:
    """The stage tasks of a plan, reading level 0 in place and writing into ``folder``."""
    tasks = []
    for stage in plan.stages:
        if stage.source == 0:
            source = str(plan.image.root / plan.levels[0].path)
        else:
            source = str(folder.level_path(stage.source))
        base = plan.levels[stage.source].cumulative
        tasks.append(
            BlockTask(
                stage=stage,
                source=source,
                targets=tuple(str(folder.level_path(k)) for k in stage.targets),
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
    executor: Executor, tasks: list[BlockTask], in_flight: int
) -> Generator[int, None, None]:
    """Run every block of every stage, at most ``in_flight`` at once; yield after each block.

    Closing the generator stops submitting, cancels what has not started and waits for the
    blocks already running, so nothing writes into the build folder once it returns.
    """
    for task in tasks:
        pending: set[Future[int]] = set()
        submitted = 0
        try:
            while submitted < task.stage.n_blocks or pending:
                while submitted < task.stage.n_blocks and len(pending) < in_flight:
                    pending.add(executor.submit(run_block, task, submitted))
                    submitted += 1
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    future.result()
                    yield 1
        finally:
            for future in pending:
                future.cancel()
            wait(pending)


def _intermediate_document(plan: PyramidPlan) -> bytes:
    """The metadata listing only level 0: what readers see while old levels move aside."""
    image = plan.image
    if not image.has_multiscales:
        return encode_json(image.group_document)
    multiscale = dict(image.multiscale)
    multiscale["datasets"] = [image.multiscale["datasets"][0]]
    return encode_json(group_document_with(image, multiscale))


def final_document(plan: PyramidPlan) -> bytes:
    """The image's metadata document listing every level of the plan."""
    multiscale = multiscale_with_levels(plan.image, plan.datasets(), plan.provenance)
    return encode_json(group_document_with(plan.image, multiscale))


def _extra_files(plan: PyramidPlan) -> list[tuple[str, bytes]]:
    """Group metadata the new levels' folders need: a bare v2 image's ``.zgroup``, and the
    parent groups of nested level paths (``scale1/`` beside ``scale0/``) where level 0 has one.
    """
    image = plan.image
    if image.zarr_format == 2:
        name, document = ".zgroup", {"zarr_format": 2}
    else:
        name, document = "zarr.json", {"zarr_format": 3, "node_type": "group", "attributes": {}}
    files = [(".zgroup", encode_json(document))] if image.zarr_format == 2 else []
    parents0 = Path(image.level0.path).parents[:-1]
    for level in plan.new_levels:
        for parent, parent0 in zip(Path(level.path).parents[:-1], parents0, strict=False):
            entry = (f"{parent}/{name}", encode_json(document))
            if (image.root / parent0 / name).is_file() and entry not in files:
                files.append(entry)
    return files


def iter_build(
    zarrurl: str | Path,
    options: BuildOptions | None = None,
    *,
    executor: Executor | None = None,
    scheduler: str | None = None,
    **params: Any,
) -> Generator[Progress, None, PyramidPlan]:
    """Build a pyramid, yielding progress after each block; returns the plan it carried out.

    ``options`` are the build's :class:`~napari_pyramids.options.BuildOptions` (or, instead,
    their keywords as ``params``). The image is planned (every input checked) before anything
    is written, then locked, cleared of any interrupted build, planned again under the lock,
    written, and published. Closing the generator early cancels the build and restores the
    image.
    """
    if options is None:
        options = BuildOptions(**params)
    elif params:
        raise TypeError("iter_build takes BuildOptions or their keywords, not both")
    image = open_image(zarrurl)
    try:
        plan: PyramidPlan | None = plan_pyramid(image, options)
    except PyramidError:
        # Levels an interrupted build renamed into place look like existing levels until
        # its journal is replayed, which needs the lock: decide there (and clean up).
        if not has_leftovers(image.root):
            raise
        plan = None
    if plan is not None and not plan.new_levels:
        return plan
    root = image.root
    build_id = uuid.uuid4().hex[:12]
    with ImageLock(root, build_id):
        try:
            recover(root)
        except OSError as exc:
            raise storage_error(exc, root) from exc
        plan = plan_pyramid(open_image(root), options)
        if not plan.new_levels:
            return plan
        aside = [*plan.replaced, *(p for p in plan.dropped if os.path.lexists(root / p))]
        _check_level0_untouched(plan, aside)
        # Hide every listed level while levels move: the original metadata may list a path
        # that is about to be replaced, even one missing on disk.
        lists_levels = plan.image.has_multiscales and len(plan.image.level_paths) > 1
        folder = BuildFolder(root, build_id, plan.image.metadata_file)
        try:
            folder.create()
            yield from _write_levels(plan, folder, executor, scheduler)
            yield Progress(plan.total_blocks, plan.total_blocks, "publishing")
            folder.publish(
                new_levels=[(lv.index, lv.path) for lv in plan.new_levels],
                aside=aside,
                intermediate=_intermediate_document(plan) if aside or lists_levels else None,
                final=final_document(plan),
                extra_files=_extra_files(plan),
            )
        except OSError as exc:
            raise storage_error(exc, root) from exc
        finally:
            if not folder.committed:
                _undo(root)
        try:
            folder.remove()
        except OSError as exc:
            warnings.warn(
                f"{folder.path}: the pyramid is built but its build folder could not be "
                f"removed ({exc.strerror}); the next build of this image removes it",
                stacklevel=2,
            )
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


def _undo(root: Path) -> None:
    """Roll back an unfinished build; if even that fails, the next build will."""
    try:
        recover(root)
    except OSError as exc:
        warnings.warn(
            f"{root}: the interrupted build could not be undone yet ({exc.strerror}); the "
            "image lists only complete levels, and the next build of it finishes the undo",
            stacklevel=3,
        )


def _write_levels(
    plan: PyramidPlan, folder: BuildFolder, executor: Executor | None, scheduler: str | None
) -> Generator[Progress, None, None]:
    for level in plan.new_levels:
        folder.write_level_document(level.index, level.document, plan.image.zarr_format)
    tasks = block_tasks(plan, folder)
    done, total = 0, plan.total_blocks
    yield Progress(done, total, "writing")
    context = (
        contextlib.nullcontext(executor) if executor else make_executor(plan.workers, scheduler)
    )
    with context as pool:
        for _ in run_tasks(pool, tasks, in_flight=plan.workers):
            done += 1
            yield Progress(done, total, "writing")


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
    try:
        while True:
            step = next(gen)
            if progress is not None and step.phase == "writing":
                progress(step.done, step.total)
            if should_stop is not None and step.phase == "writing" and should_stop():
                gen.close()
                raise BuildCancelled("the build was cancelled; the image is unchanged")
    except StopIteration as stop:
        return stop.value
