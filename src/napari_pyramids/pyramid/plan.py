"""The validated plan of a pyramid build: every bad input is refused here, before any write.

A plan says what each new level looks like (path, shape, chunks, shards, scale, translation,
its zarr metadata document) and how the engine will compute it: in one or more *stages*, each
a single pass over one source level in blocks aligned so that every block writes whole chunks
(whole shards) of every level it produces, and no two blocks touch one chunk.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import (
    LabelMethodError,
    LevelExistsError,
    MemoryBudgetError,
    NoZAxisError,
    PyramidError,
    TooManyLevelsError,
    format_bytes,
)
from ..ome.image import OmeZarrImage
from ..ome.metadata import dataset_entry, level_transforms
from ..options import AUTO, BuildOptions, parse_chunksize
from ..system import cpu_count
from ..untrusted import check_level_path
from .methods import CALLABLE, Method, default_method
from .reduce import output_length, working_memory

# Blocks grow up to this size (when chunk alignment does not already force a bigger one).
# Level 0 is reduced chunk by chunk, so bigger blocks save nothing, and smaller ones share
# the work out more evenly (8 blocks of a 256 MiB image on 2 workers left up to 1/8 of the
# build on one worker at the end; 32 blocks, 1/32) and report progress more often.
TARGET_BLOCK_BYTES = 8 * 2**20
# zarr keeps ~2.2 KiB of Python bookkeeping per chunk it reads or writes (tracemalloc, zarr
# 3.1, v2 and v3 alike): a block of a million 1-voxel chunks costs gigabytes for 2 MiB of
# pixels. Blocks are sized with this per-chunk cost so that tiny chunks mean small blocks.
CHUNK_OVERHEAD = 4096


@dataclass(frozen=True)
class LevelPlan:
    """One level of the pyramid; level 0 is the existing one."""

    index: int
    path: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    shards: tuple[int, ...] | None
    factors: tuple[int, ...]
    cumulative: tuple[int, ...]
    scale: tuple[float, ...]
    translation: tuple[float, ...]
    document: dict[str, Any] = field(repr=False, compare=False)
    itemsize: int = 1

    @property
    def write_unit(self) -> tuple[int, ...]:
        return self.shards or self.chunks

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.itemsize


@dataclass(frozen=True)
class Stage:
    """One pass over ``source`` producing ``targets`` (consecutive levels) block by block."""

    source: int
    targets: tuple[int, ...]
    source_shape: tuple[int, ...]
    block: tuple[int, ...]

    @property
    def grid(self) -> tuple[int, ...]:
        return tuple(-(-n // b) for n, b in zip(self.source_shape, self.block, strict=True))

    @property
    def n_blocks(self) -> int:
        return math.prod(self.grid)

    def region(self, index: int) -> tuple[slice, ...]:
        """The source region of block number ``index`` (row-major over the block grid)."""
        position = np.unravel_index(index, self.grid)
        return tuple(
            slice(int(p) * b, min((int(p) + 1) * b, n))
            for p, b, n in zip(position, self.block, self.source_shape, strict=True)
        )

    def regions(self) -> Iterator[tuple[slice, ...]]:
        for index in range(self.n_blocks):
            yield self.region(index)


@dataclass(frozen=True)
class PyramidPlan:
    """Everything a build will do, decided and checked before anything is written."""

    image: OmeZarrImage
    levels: tuple[LevelPlan, ...]
    method: str
    aggregation: str | Callable[..., Any] = field(repr=False)
    edge: str
    overwrite: bool
    stages: tuple[Stage, ...]
    memory_budget: int
    workers: int
    write_empty_chunks: bool
    replaced: tuple[str, ...]
    dropped: tuple[str, ...]
    provenance: dict[str, Any] = field(repr=False)

    @property
    def new_levels(self) -> tuple[LevelPlan, ...]:
        return self.levels[1:]

    @property
    def total_blocks(self) -> int:
        return sum(stage.n_blocks for stage in self.stages)

    @property
    def new_bytes(self) -> int:
        """Uncompressed bytes of the levels to be written."""
        return sum(level.nbytes for level in self.new_levels)

    def datasets(self) -> list[dict[str, Any]]:
        """The ``multiscales.datasets`` entries of every level."""
        return [dataset_entry(lv.path, lv.scale, lv.translation) for lv in self.levels]

    def describe(self) -> str:
        """A few lines a person can read: levels, shapes, chunks and blocks."""
        lines = []
        for lv in self.levels:
            unit = f" shards {lv.shards}" if lv.shards else ""
            lines.append(f"level {lv.index} {lv.path!r}: {lv.shape} chunks {lv.chunks}{unit}")
        for st in self.stages:
            lines.append(
                f"pass over level {st.source} -> levels {list(st.targets)}: "
                f"{st.n_blocks} blocks of {st.block}"
            )
        return "\n".join(lines)


def choose_method(
    image: OmeZarrImage, options: BuildOptions
) -> tuple[Method, str | Callable[..., Any]]:
    """The method record and the engine's reducer key, with label images kept from mean.

    The key is the method's name, or the caller's own function for ``callable``.
    """
    is_label = image.is_label if options.labels is None else options.labels
    method = options.chosen_method or default_method(is_label)
    if is_label and not method.label_safe and options.labels is None:
        problem = (
            f"{image.root} is a label image: {method.name} would invent label ids found in no "
            "input pixel."
        )
        raise LabelMethodError(
            f"{problem} Use method='mode' (the default for labels) or 'nearest'; if it "
            "really is an intensity image, pass labels=False (CLI: --not-labels).",
            problem,
        )
    if method is CALLABLE:
        return method, options.aggregation_function
    return method, method.name


def level_factors(image: OmeZarrImage, options: BuildOptions) -> tuple[int, ...]:
    """The per-axis factor between consecutive levels."""
    fxy, fz = options.coarsening_xy, options.coarsening_z
    factors = [1] * image.ndim
    y, x = image.yx_axes
    factors[y] = factors[x] = fxy
    if fz > 1:
        z = image.z_axis
        if z is None:
            problem = f"the image has no Z axis (axes {[a.name for a in image.axes]})"
            raise NoZAxisError(f"coarsening_z={fz} but {problem}; use coarsening_z=1", problem)
        factors[z] = fz
    return tuple(factors)


def num_levels_for(image: OmeZarrImage, options: BuildOptions, factors: Sequence[int]) -> int:
    """The number of levels asked for, with "auto" resolved for this image."""
    if options.num_levels == AUTO:
        return auto_num_levels(image, factors)
    return int(options.num_levels)


def level_shapes(
    image: OmeZarrImage, num_levels: int, factors: Sequence[int], edge: str
) -> list[tuple[int, ...]]:
    """Shapes of levels 0..num_levels-1; refuses a level smaller than one pixel."""
    shapes = [image.level0.shape]
    while len(shapes) < num_levels:
        previous = shapes[-1]
        for axis, (n, f) in enumerate(zip(previous, factors, strict=True)):
            too_small = n < f if edge == "trim" else (f > 1 and n < 2)
            if too_small:
                name = image.axes[axis].name
                problem = (
                    f"level {len(shapes)} would be smaller than one pixel along {name!r} "
                    f"(level {len(shapes) - 1} has {n} px, factor {f})"
                )
                raise TooManyLevelsError(
                    f"num_levels={num_levels} is too many for shape {image.level0.shape}: "
                    f"{problem}. Use num_levels <= {len(shapes)}.",
                    problem,
                    most=len(shapes),
                )
        shapes.append(
            tuple(output_length(n, f, edge) for n, f in zip(previous, factors, strict=True))
        )
    return shapes


def max_num_levels(image: OmeZarrImage, factors: Sequence[int], edge: str, limit: int = 64) -> int:
    """The most levels (including 0) ``factors`` allow before a level gets below one pixel."""
    shape, count = image.level0.shape, 1
    while count < limit:
        small = any(
            (n < f if edge == "trim" else (f > 1 and n < 2))
            for n, f in zip(shape, factors, strict=True)
        )
        if small:
            break
        shape = tuple(output_length(n, f, edge) for n, f in zip(shape, factors, strict=True))
        count += 1
    return count


def level_path(level0_path: str, index: int) -> str:
    """The path of level ``index`` following level 0's naming (0 -> 1, s0 -> s1, scale0/x).

    Numbers count on from level 0's own (a level 0 stored as "1" gets "2", "3", ...): a new
    level must never land on level 0's path, which the build would then replace.
    """
    match = re.match(r"^(.*?)(\d+)(\D*)$", level0_path)
    if not match:
        return f"{level0_path}_{index}"
    prefix, digits, suffix = match.groups()
    return f"{prefix}{str(int(digits) + index).zfill(len(digits))}{suffix}"


def _chunk_layout(
    level0_chunks: Sequence[int],
    level0_shards: Sequence[int] | None,
    chunksize: Sequence[int] | None,
    shape: Sequence[int],
) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    base = chunksize if chunksize is not None else level0_chunks
    chunks = tuple(max(1, min(c, n)) for c, n in zip(base, shape, strict=True))
    if level0_shards is None:
        return chunks, None
    shards = []
    for s0, c, n in zip(level0_shards, chunks, shape, strict=True):
        whole = max(c, (s0 // c) * c)
        shards.append(min(whole, -(-n // c) * c))
    return chunks, tuple(shards)


def _check_open_array_kwargs(image: OmeZarrImage, kwargs: Mapping[str, Any]) -> None:
    """The keyword values that depend on the image: separator (v2 only) and fill value."""
    sep = kwargs.get("dimension_separator")
    if sep is not None and (image.zarr_format != 2 or sep not in (".", "/")):
        raise PyramidError("dimension_separator must be '.' or '/' and applies to zarr v2 only")
    if "fill_value" in kwargs and not _fits(kwargs["fill_value"], image.level0.dtype):
        raise PyramidError(
            f"fill_value {kwargs['fill_value']!r} does not fit dtype {image.level0.dtype}"
        )


def _fits(value: Any, dtype: np.dtype) -> bool:
    """Whether a fill value is a number that ``dtype`` represents exactly."""
    if isinstance(value, bool):
        return dtype.kind == "b"
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return isinstance(value, numbers.Integral) and info.min <= value <= info.max
    if dtype.kind == "f":
        return isinstance(value, numbers.Real)
    return False


def _existing_levels(
    image: OmeZarrImage, new_paths: Sequence[str], overwrite: bool
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Paths the build replaces and listed levels it drops; refuses them without overwrite."""
    root, store = image.root, image.store
    listed = list(image.level_paths[1:]) if image.has_multiscales else []
    present = {p: store.exists(p) for p in dict.fromkeys([*new_paths, *listed])}
    existing = [p for p in new_paths if present[p] or p in listed]
    extra = [p for p in listed if p not in new_paths]
    replaced = tuple(p for p in new_paths if present[p])
    for p in extra:
        store.check_write_target(p, "level to drop", folder=True)
    for p in [*replaced, *extra]:
        if present[p] and store.array_format(p) is None:
            # Overwrite replaces pyramid levels, never whatever else sits at a level path or
            # whatever a stranger's metadata lists as a level (a labels group, a notes folder).
            raise PyramidError(
                f"{root / p} sits where pyramid level {p!r} goes but is not a zarr array; the "
                "build never replaces anything else. Move it away (or fix the multiscales "
                "metadata), then run again. Nothing was written."
            )
    if not overwrite and (existing or extra):
        name = (existing or extra)[0]
        problem = f"pyramid level {name!r} already exists in {root}"
        raise LevelExistsError(
            f"{problem}; pass overwrite=True (CLI: --overwrite) to replace the existing "
            "levels. Nothing was written.",
            problem,
        )
    for p in extra:
        check_level_path(p, "existing level")
    return replaced, tuple(extra)


def _check_overlap(paths: Sequence[str]) -> None:
    for a in paths:
        for b in paths:
            if a != b and b.startswith(a + "/"):
                raise PyramidError(
                    f"level path {b!r} lies inside level {a!r}; each level needs its own folder"
                )


def task_bytes(
    levels: Sequence[LevelPlan],
    stage_source: int,
    stage_end: int,
    block: Sequence[int],
    method: str,
) -> int:
    """Peak memory of one block task: the block being reduced, the reducer, the output."""
    itemsize = levels[0].itemsize
    # zarr decodes up to its async concurrency (10) chunks at once on the way into the block.
    read = 10 * math.prod(levels[stage_source].write_unit) * itemsize
    current = math.prod(block) * itemsize
    peak = current + min(read, current)
    for target in range(stage_source + 1, stage_end + 1):
        window = math.prod(levels[target].factors)
        out = current // window
        # The input, the reducer's output and temporaries, and the output's encoded copy.
        peak = max(peak, current + working_memory(current, window, method) + out)
        current = out
    return int(peak) + CHUNK_OVERHEAD * _chunks_touched(levels, stage_source, stage_end, block)


def _chunks_touched(
    levels: Sequence[LevelPlan], source: int, end: int, block: Sequence[int]
) -> int:
    """The most chunks one zarr call of a block task handles: its read or one level's write."""
    shape = tuple(block)
    most = math.prod(-(-n // c) for n, c in zip(shape, levels[source].chunks, strict=True))
    for target in range(source + 1, end + 1):
        shape = tuple(-(-n // f) for n, f in zip(shape, levels[target].factors, strict=True))
        count = math.prod(-(-n // c) for n, c in zip(shape, levels[target].chunks, strict=True))
        most = max(most, count)
    return most


def _aligned_block(levels: Sequence[LevelPlan], source: int, end: int) -> tuple[int, ...]:
    """Smallest block of ``source`` pixels that writes whole units of levels source+1..end."""
    block = []
    for axis, n in enumerate(levels[source].shape):
        size = levels[source].write_unit[axis]
        for target in range(source + 1, end + 1):
            relative = levels[target].cumulative[axis] // levels[source].cumulative[axis]
            size = math.lcm(size, levels[target].write_unit[axis] * relative)
        block.append(min(size, n))
    return tuple(block)


def _grow_block(
    block: tuple[int, ...],
    levels: Sequence[LevelPlan],
    source: int,
    end: int,
    method: str,
    per_task: int,
) -> tuple[int, ...]:
    """Double the block along axes (uncoarsened first, innermost first) while it fits."""
    shape = levels[source].shape
    itemsize = levels[source].itemsize
    coarsened = [a for a, f in enumerate(levels[1].factors) if f > 1]
    order = [a for a in reversed(range(len(shape))) if a not in coarsened] + coarsened
    grown = list(block)
    for axis in order:
        while grown[axis] < shape[axis]:
            trial = list(grown)
            trial[axis] = min(2 * grown[axis], shape[axis])
            if (
                math.prod(trial) * itemsize > TARGET_BLOCK_BYTES
                or task_bytes(levels, source, end, trial, method) > per_task
            ):
                break
            grown = trial
    return tuple(grown)


def plan_stages(
    levels: Sequence[LevelPlan], method: str, memory_budget: int, workers: int
) -> tuple[Stage, ...]:
    """Split the build into passes, each covering as many levels as the budget allows."""
    per_task = memory_budget // workers
    stages = []
    source = 0
    while source < len(levels) - 1:
        end, block = source, None
        for candidate in range(source + 1, len(levels)):
            trial = _aligned_block(levels, source, candidate)
            if task_bytes(levels, source, candidate, trial, method) > per_task:
                break
            end, block = candidate, trial
        if block is None:
            smallest = _aligned_block(levels, source, source + 1)
            need = task_bytes(levels, source, source + 1, smallest, method)
            problem = (
                f"writing whole chunks of level {source + 1} needs blocks of "
                f"{smallest} voxels of level {source} "
                f"(~{format_bytes(need)} of working memory per worker), more than the memory "
                f"budget of {format_bytes(memory_budget)} over {workers} worker(s) allows."
            )
            raise MemoryBudgetError(
                f"{problem} Raise memory_budget (CLI --memory), use fewer workers, or pass a "
                "smaller chunksize.",
                problem,
            )
        block = _grow_block(block, levels, source, end, method, per_task)
        stages.append(
            Stage(source, tuple(range(source + 1, end + 1)), levels[source].shape, block)
        )
        source = end
    return tuple(stages)


def _stages_for_workers(
    levels: Sequence[LevelPlan], method: str, budget: int, least: int, wanted: int
) -> tuple[tuple[Stage, ...], int]:
    """The stages for ``wanted`` workers, or for fewer (down to ``least``) if the budget
    cannot give each its share; and the workers they were planned for."""
    while True:
        try:
            return plan_stages(levels, method, budget, wanted), wanted
        except PyramidError:
            if wanted <= least:
                raise
            wanted = max(least, wanted // 2)


def plan_pyramid(
    image: OmeZarrImage, options: BuildOptions | None = None, **params: Any
) -> PyramidPlan:
    """Check every parameter against the image and decide the levels and the passes.

    Parameters
    ----------
    image
        The image whose pyramid is planned.
    options
        The build's options; or, instead, their keywords (``num_levels=3``, ...).

    Raises
    ------
    PyramidError
        With one sentence naming the problem and the fix, before anything is written.
    """
    if options is None:
        options = BuildOptions(**params)
    elif params:
        raise TypeError("plan_pyramid takes BuildOptions or their keywords, not both")
    method, aggregation = choose_method(image, options)
    factors = level_factors(image, options)
    shapes = level_shapes(image, num_levels_for(image, options, factors), factors, options.edge)
    chunksize = parse_chunksize(options.chunksize, image)
    kwargs = options.open_array_kwargs
    _check_open_array_kwargs(image, kwargs)
    budget = options.memory_budget
    workers = options.workers if options.workers is not None else cpu_count()
    # Requests to an object store wait on the network, not on a core: run more blocks at
    # once there (each still within its share of the budget; fewer if the budget is short).
    wanted = max(workers, image.store.concurrent_tasks) if options.workers is None else workers

    level0 = image.level0
    image.store.check_write_target(image.metadata_file, "group metadata", folder=False)
    for group_file, _ in image.format.group_files():
        image.store.check_write_target(group_file, "group metadata", folder=False)
    paths = [level0.path] + [level_path(level0.path, k) for k in range(1, len(shapes))]
    if level0.path in paths[1:]:
        raise PyramidError(f"a new level would replace level 0 {level0.path!r}; rename it")
    for p in paths[1:]:
        check_level_path(p, "new level")
        image.store.check_write_target(p, "new level", folder=True)
    _check_overlap([*paths, *image.level_paths])
    replaced, dropped = _existing_levels(image, paths[1:], options.overwrite)

    levels = []
    cumulative = (1,) * image.ndim
    for k, shape in enumerate(shapes):
        if k == 0:
            chunks, shards, doc = level0.chunks, level0.shards, level0.document
            step = (1,) * image.ndim
        else:
            step = factors
            cumulative = tuple(c * f for c, f in zip(cumulative, factors, strict=True))
            chunks, shards = _chunk_layout(level0.chunks, level0.shards, chunksize, shape)
            doc = image.format.level_document(
                level0.document, shape, chunks, shards, [a.name for a in image.axes], kwargs
            )
        scale, translation = level_transforms(
            image.scale0, image.translation0, cumulative, method.window
        )
        if k == 0:
            translation = list(image.translation0)
        levels.append(
            LevelPlan(
                k,
                paths[k],
                shape,
                chunks,
                shards,
                step,
                cumulative,
                tuple(scale),
                tuple(translation),
                doc,
                level0.dtype.itemsize,
            )
        )
    _check_units_fit(levels, budget)
    stages: tuple[Stage, ...] = ()
    if len(levels) > 1:
        stages, workers = _stages_for_workers(levels, method.name, budget, workers, wanted)
    provenance = {
        "method": method.name,
        "num_levels": len(levels),
        "coarsening_xy": factors[image.yx_axes[1]],
        "coarsening_z": factors[image.z_axis] if image.z_axis is not None else 1,
        "edge": options.edge,
    }
    return PyramidPlan(
        image=image,
        levels=tuple(levels),
        method=method.name,
        aggregation=aggregation,
        edge=options.edge,
        overwrite=options.overwrite,
        stages=stages,
        memory_budget=budget,
        workers=workers,
        write_empty_chunks=options.write_empty_chunks,
        replaced=replaced,
        dropped=dropped,
        provenance=provenance,
    )


def _check_units_fit(levels: Sequence[LevelPlan], budget: int) -> None:
    """A single chunk or shard bigger than the budget cannot be read or written within it."""
    for lv in levels:
        unit_bytes = math.prod(lv.write_unit) * lv.itemsize
        if unit_bytes > budget:
            kind = "shard" if lv.shards else "chunk"
            problem = (
                f"level {lv.index} has a {kind} of {lv.write_unit} voxels "
                f"({format_bytes(unit_bytes)}), bigger than the memory budget of "
                f"{format_bytes(budget)}."
            )
            raise MemoryBudgetError(
                f"{problem} Raise memory_budget (CLI --memory) or pass a smaller chunksize.",
                problem,
            )


def auto_num_levels(image: OmeZarrImage, factors: Sequence[int], target: int = 256) -> int:
    """Levels (including 0) until Y and X are both at most about ``target`` pixels."""
    y, x = image.yx_axes
    shape = list(image.level0.shape)
    count = 1
    while max(shape[y], shape[x]) > target and min(shape[y] // factors[y], shape[x] // factors[x]):
        shape = [n // f for n, f in zip(shape, factors, strict=True)]
        count += 1
    return count
