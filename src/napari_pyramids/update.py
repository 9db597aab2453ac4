"""Refresh a pyramid after level 0 changed: the build's plan, restricted to what depends on it.

An update re-plans the pyramid with the options the build recorded, finds the level-0 write
units that changed since (``changes.py``) or takes the regions a caller names, and runs the
engine's block tasks for exactly the write units of levels 1..n whose level-0 window meets a
change: one stage per level, one block per write unit (its window in the level above), level
after level so that each reads the level it comes from already refreshed.

Write units are replaced where they are, each atomically (write elsewhere, then rename; one
PUT in an object store), so a reader sees every level readable and each unit old or new,
never part of one. The record is rewritten last: an update interrupted at any point leaves
the old record, so the next one finds the same changes and finishes the work. Level 0 grown
along an axis extends every level (new units written first, then each level's array
metadata). What cannot be refreshed unit by unit (no record, a record that does not match
the pyramid, a chunk layout that changes with the new shape, level 0 shrunk) is rebuilt in
full by the build transaction, as ``build --overwrite`` with the recorded options would.
"""

from __future__ import annotations

import contextlib
import math
import uuid
from collections.abc import Callable, Generator, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .changes import (
    OPTION_KEYS,
    REBUILT,
    UNCHANGED,
    UPDATED,
    Box,
    ChangeRecord,
    UpdateReport,
    boxes_of_units,
    changed_units,
    check_regions,
    dependent_units,
    document_digests,
    grown_boxes,
    published_documents,
    read_record,
    record_key,
    snapshot,
    unchanged_since_record,
    updated_units,
)
from .documents import consolidated_documents
from .engine import BlockTask, Progress, iter_build, make_executor, run_tasks
from .errors import PyramidError
from .images import open_image
from .ome.image import OmeZarrImage, parse_array_info, read_image
from .options import BuildOptions
from .pyramid.methods import METHODS
from .pyramid.plan import PyramidPlan, Stage, plan_pyramid
from .storage import (
    LevelArray,
    LocalStore,
    Store,
    encode_json,
    open_level_array,
    open_store,
)


@dataclass(frozen=True)
class _Decision:
    """What an update will do, decided under the lock."""

    plan: PyramidPlan | None
    options: BuildOptions | None
    boxes: list[Box]
    changed: int
    grown: bool
    record: bytes | None
    rebuild: str = ""


def iter_update(
    zarrurl: str | Path | Store,
    regions: Sequence[tuple[slice, ...]] | None = None,
    *,
    memory_budget: int | str | None = None,
    workers: int | None = None,
    executor: Executor | None = None,
    scheduler: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> Generator[Progress, None, UpdateReport]:
    """Update a pyramid, yielding progress after each block; returns what was done.

    See :func:`~napari_pyramids.update_pyramid`. Closing the generator early stops between
    blocks: every unit is then old or new, and the next update finishes the work.
    """
    store = open_store(zarrurl, storage_options)
    if regions is None and isinstance(store, LocalStore) and unchanged_since_record(store):
        # Decided read-only: nothing to write, so no lock to take (see unchanged_since_record).
        return UpdateReport(str(store.describe()), UNCHANGED)
    store.check_writable()
    image = open_image(store)
    _check_has_pyramid(image)
    update_id = uuid.uuid4().hex[:12]
    budget = {"memory_budget": memory_budget, "workers": workers}
    with store.lock(update_id):
        store.recover()
        decision = _decide(read_image(store), regions, budget)
        if not decision.rebuild:
            if decision.plan is None:
                if decision.record is not None:
                    # Same content, new stamps (a copy, say): compared by stamp next time.
                    store.unit_writer(update_id, image.level0.path).set(
                        record_key(image.level_paths[1]), decision.record
                    )
                    store.finish_units(update_id)
                return UpdateReport(str(store.describe()), UNCHANGED)
            written = yield from _refresh(store, update_id, decision, executor, scheduler)
            return UpdateReport(
                str(store.describe()),
                UPDATED,
                changed=decision.changed,
                written=written,
                grown=decision.grown,
            )
    # Outside the lock: the build takes it itself (and re-plans under it).
    assert decision.options is not None
    yield from iter_build(store, decision.options, executor=executor, scheduler=scheduler)
    return UpdateReport(str(store.describe()), REBUILT, note=decision.rebuild)


def _check_has_pyramid(image: OmeZarrImage) -> None:
    if not image.has_multiscales or len(image.level_paths) < 2:
        raise PyramidError(
            f"{image.root} has no pyramid to update (level 0 only); build it with: "
            f"napari-pyramids build {image.root}"
        )


def _decide(
    image: OmeZarrImage, regions: Sequence[tuple[slice, ...]] | None, budget: dict[str, Any]
) -> _Decision:
    """Under the lock: the plan, the changed level-0 regions, or why to rebuild in full."""
    _check_has_pyramid(image)
    record = read_record(image.store, image.level_paths[1])
    if record is not None and not _record_matches(record, image):
        record = None
    options = _options_of(record, image, budget)
    plan = plan_pyramid(image, options)
    info = image.level0
    if record is None and regions is None:
        return _rebuild(
            options,
            "no change record matching its levels (built before update "
            "existed, or by an older version): every level recomputed",
        )
    problem = _in_place_problem(image, plan, record)
    if problem:
        return _rebuild(options, problem)
    current = snapshot(image.store, info)
    old_shape = record.shape if record is not None else info.shape
    grown = tuple(old_shape) != tuple(info.shape)
    boxes = grown_boxes(old_shape, info.shape)
    if regions is None:
        assert record is not None
        keys = changed_units(image.store, info, record.units, current)
        boxes += list(boxes_of_units(info, keys))
        changed = len(keys)
        units = current
    else:
        given = check_regions(regions, info.shape)
        boxes += given
        changed = len(given)
        units = updated_units(record, info, current, boxes) if record is not None else None
    new_record = None
    documents = document_digests(published_documents(plan, None, rewritten=grown))
    if record is not None and units is not None:
        new_record = ChangeRecord(
            info.path, info.shape, info.write_unit, record.options, dict(units), documents
        ).to_bytes()
    if not boxes:
        stale = record is not None and (units != record.units or documents != record.documents)
        return _Decision(None, options, [], 0, False, new_record if stale else None)
    return _Decision(plan, options, boxes, changed, grown, new_record)


def _rebuild(options: BuildOptions, why: str) -> _Decision:
    return _Decision(None, options, [], 0, False, None, rebuild=why)


def level0_changed(image: OmeZarrImage) -> bool | None:
    """Whether level 0 changed since the pyramid was last built or updated, as an update
    would find it (one listing of level 0's units, no data read); None when there is no
    record matching its levels to tell."""
    if not image.has_multiscales or len(image.level_paths) < 2:
        return None
    record = read_record(image.store, image.level_paths[1])
    if record is None or not _record_matches(record, image):
        return None
    info = image.level0
    if tuple(record.shape) != tuple(info.shape):
        return True
    return bool(changed_units(image.store, info, record.units, snapshot(image.store, info)))


def _record_matches(record: ChangeRecord, image: OmeZarrImage) -> bool:
    """Whether the record describes the pyramid the metadata lists (same level 0, the same
    options as its provenance): a build by another tool, or by a version that wrote no
    record, leaves a record that no longer does."""
    kwargs = _provenance(image)
    if kwargs is None or record.level0_path != image.level0.path:
        return False
    if len(record.shape) != image.ndim:
        return False
    recorded = record.options
    return all(
        recorded.get(key) == kwargs.get(key)
        for key in ("method", "num_levels", "coarsening_xy", "coarsening_z", "edge")
    )


def _provenance(image: OmeZarrImage) -> dict[str, Any] | None:
    """The options napari-pyramids wrote into the multiscales metadata, if it built these."""
    metadata = image.multiscale.get("metadata") if image.has_multiscales else None
    if not isinstance(metadata, dict) or metadata.get("method") != "napari_pyramids.build_pyramid":
        return None
    kwargs = metadata.get("kwargs")
    return kwargs if isinstance(kwargs, dict) else None


def _options_of(
    record: ChangeRecord | None, image: OmeZarrImage, budget: dict[str, Any]
) -> BuildOptions:
    """The options that made the pyramid: the record's, else the metadata's provenance."""
    if record is not None:
        recorded = dict(record.options)
    else:
        kwargs = _provenance(image)
        if kwargs is None or len(image.level_paths) != kwargs.get("num_levels"):
            raise PyramidError(
                f"{image.root}: its levels were not built by napari-pyramids (or its metadata "
                "no longer says how), so update cannot tell how to recompute them. Rebuild "
                f"them once with: napari-pyramids build {image.root} --overwrite"
            )
        recorded = {key: kwargs.get(key) for key in OPTION_KEYS}
        recorded["chunksize"] = _chunks_of_level1(image)
        recorded["labels"] = False if recorded["method"] in ("mean", "median") else None
        recorded["open_array_kwargs"] = {}
    if recorded.get("method") not in METHODS:
        raise PyramidError(
            f"{image.root}: its levels were built with a caller's aggregation_function, "
            "which update cannot call again; rebuild with build_pyramid(..., overwrite=True)"
        )
    return BuildOptions(
        num_levels=recorded["num_levels"],
        coarsening_xy=recorded["coarsening_xy"],
        coarsening_z=recorded["coarsening_z"],
        method=recorded["method"],
        chunksize=recorded["chunksize"],
        edge=recorded["edge"],
        labels=recorded["labels"],
        open_array_kwargs=recorded["open_array_kwargs"],
        overwrite=True,
        **budget,
    )


def _chunks_of_level1(image: OmeZarrImage) -> list[int] | None:
    """The chunk shape level 1 was built with (clipped levels below keep it)."""
    from .ome.image import read_array_info

    try:
        level1 = read_array_info(image.store, image.level_paths[1], image.zarr_format)
    except PyramidError:
        return None
    if level1.chunks == image.level0.chunks:
        return None
    return list(level1.chunks)


def _in_place_problem(image: OmeZarrImage, plan: PyramidPlan, record: ChangeRecord | None) -> str:
    """Why the levels cannot be refreshed unit by unit ("" if they can)."""
    if tuple(image.level_paths) != tuple(lv.path for lv in plan.levels):
        return "the metadata lists other levels than the recorded options make"
    if record is not None and any(
        n < m for n, m in zip(image.level0.shape, record.shape, strict=True)
    ):
        return "level 0 shrank"
    grown = False
    for level in plan.new_levels:
        document = image.store.read_json(
            f"{level.path}/{image.format.array_file}", "array metadata"
        )
        if not isinstance(document, dict):
            return f"level {level.path!r} has no array metadata"
        if {k: v for k, v in document.items() if k != "shape"} != {
            k: v for k, v in _normalized(level.document).items() if k != "shape"
        }:
            if list(document.get("shape", [])) != list(level.shape):
                return (
                    f"level 0's shape changed, and with it the chunk layout of level "
                    f"{level.path!r} (its chunks were clipped to its old shape)"
                )
            return f"level {level.path!r} is not stored as the recorded options make it"
        if list(document.get("shape", [])) != list(level.shape):
            grown = True
    if grown and record is None:
        return "level 0's shape changed and there is no change record to say from what"
    if grown:
        try:
            listed = any(True for _ in consolidated_documents(image, True))
        except PyramidError:
            listed = True
        if listed:
            return "level 0 grew and consolidated metadata lists the levels' shapes"
    return ""


def _normalized(document: dict[str, Any]) -> dict[str, Any]:
    """A planned document as it reads back from JSON (tuples become lists)."""
    import json

    return json.loads(encode_json(document))


def _refresh(
    store: Store,
    update_id: str,
    decision: _Decision,
    executor: Executor | None,
    scheduler: str | None,
) -> Generator[Progress, None, dict[int, int]]:
    """Recompute the dependent units level by level, then the grown levels' metadata, then
    the record."""
    plan = decision.plan
    assert plan is not None
    image = plan.image
    writer = store.unit_writer(update_id, image.level0.path)
    try:
        tasks, blocks = _tasks(plan, store, writer, decision.boxes)
        total = sum(len(b) for b in blocks)
        done = 0
        yield Progress(done, total, "writing")
        in_flight = _in_flight(plan)
        context = (
            contextlib.nullcontext(executor)
            if executor
            else make_executor(min(plan.workers, in_flight), scheduler)
        )
        with context as pool:
            for finished, part in run_tasks(pool, tasks, in_flight, blocks):
                done += finished
                yield Progress(done, total, "writing", part)
        yield Progress(total, total, "publishing")
        if decision.grown:
            for level in plan.new_levels:
                writer.set(f"{level.path}/{image.format.array_file}", encode_json(level.document))
        if decision.record is not None:
            writer.set(record_key(image.level_paths[1]), decision.record)
    except OSError as exc:
        raise store.write_error(exc) from exc
    store.finish_units(update_id)
    yield Progress(total, total, "done")
    return {k + 1: len(b) for k, b in enumerate(blocks) if b}


def _tasks(
    plan: PyramidPlan, store: Store, writer: Store, boxes: list[Box]
) -> tuple[list[BlockTask], list[list[int]]]:
    """One stage per level (a block per write unit), restricted to the dependent units."""
    image = plan.image
    readers: dict[int, LevelArray] = {0: open_level_array(store, image.level0.path, image.level0)}
    tasks, blocks = [], []
    for level in plan.new_levels:
        info = parse_array_info(level.path, image.zarr_format, level.document, level.path)
        readers[level.index] = open_level_array(store, level.path, info)
        target = open_level_array(writer, level.path, info)
        source = plan.levels[level.index - 1]
        stage = Stage(
            source=source.index,
            targets=(level.index,),
            source_shape=source.shape,
            block=tuple(u * f for u, f in zip(level.write_unit, level.factors, strict=True)),
        )
        units = dependent_units(boxes, level.cumulative, level.shape, level.write_unit)
        blocks.append([int(np.ravel_multi_index(u, stage.grid)) for u in units])
        tasks.append(
            BlockTask(
                stage=stage,
                source=readers[source.index],
                targets=(target,),
                factors=(level.factors,),
                relative=(level.factors,),
                aggregation=plan.aggregation,
                edge=plan.edge,
                write_empty_chunks=plan.write_empty_chunks,
            )
        )
    return tasks, blocks


def _in_flight(plan: PyramidPlan) -> int:
    """Blocks at once within the memory budget: a block is a unit's window in the level
    above, read, reduced and encoded (about three times its bytes)."""
    largest = max(
        math.prod(u * f for u, f in zip(lv.write_unit, lv.factors, strict=True)) * lv.itemsize
        for lv in plan.new_levels
    )
    return max(1, min(plan.workers, plan.memory_budget // (3 * largest)))


def run_update(
    gen: Generator[Progress, None, UpdateReport],
    progress: Callable[[int, int], Any] | None = None,
    cancel: Callable[[], bool] | Any | None = None,
) -> UpdateReport:
    """Drive :func:`iter_update` to the end, reporting progress and honouring ``cancel``."""
    from .errors import BuildCancelled

    should_stop = cancel.is_set if hasattr(cancel, "is_set") else cancel
    try:
        while True:
            step = next(gen)
            if progress is not None and step.phase == "writing":
                progress(step.done, step.total)
            if should_stop is not None and step.phase == "writing" and should_stop():
                gen.close()
                raise BuildCancelled(
                    "the update was cancelled; every level is readable, and the next update "
                    "finishes it"
                )
    except StopIteration as stop:
        return stop.value
