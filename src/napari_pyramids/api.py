"""The library entry points: ``build_pyramid`` (seed-compatible) and ``lazy_pyramid``."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

from .datasets import labels_out_of_step
from .engine import iter_build, run_build
from .errors import PyramidError
from .images import open_image
from .ome.image import OmeZarrImage
from .options import BuildOptions
from .pyramid.plan import PyramidPlan, choose_method, level_factors, level_shapes, num_levels_for
from .update import UpdateReport, iter_update, run_update

if TYPE_CHECKING:
    import dask.array as da

    from .storage import Store


def build_pyramid(
    *,
    zarrurl: str | os.PathLike[str],
    overwrite: bool = False,
    num_levels: int = 2,
    coarsening_xy: int = 2,
    chunksize: Sequence[int] | None = None,
    aggregation_function: Callable[..., Any] | None = None,
    open_array_kwargs: Mapping[str, Any] | None = None,
    coarsening_z: int = 1,
    method: str | None = None,
    edge: str = "trim",
    labels: bool | None = None,
    memory_budget: int | str | None = None,
    workers: int | None = None,
    progress: Callable[[int, int], Any] | None = None,
    cancel: Callable[[], bool] | Any | None = None,
    scheduler: str | None = None,
    executor: Executor | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> PyramidPlan:
    """Build and write the lower-resolution levels of an OME-Zarr image, in place.

    Keyword-compatible with ``fractal_tasks_core.pyramids.build_pyramid`` (1.x): same
    parameters and defaults. Beyond it, it writes the ``multiscales`` metadata, reads level 0
    once for all levels, keeps memory within a budget, and never leaves a half-built image.

    Parameters
    ----------
    zarrurl
        Path of the image group (e.g. ``"plate.zarr/B/03/0"``), not of a level; or its URL
        in an object store (``"s3://bucket/plate.zarr/B/03/0"``, ``"gs://..."``), configured
        as AWS tools are (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``, ...).
        ``https://`` images are read only: a build there is refused.
    overwrite
        Replace existing levels (listed in the metadata or present on disk). Without it, an
        existing level is refused with a ValueError naming it and nothing changes.
    num_levels
        Total number of levels, including level 0.
    coarsening_xy
        Integer factor (>= 2) between consecutive levels along Y and X.
    chunksize
        Chunk shape of the new levels (clipped to each level's shape); default: level 0's.
    aggregation_function
        A callable ``func(x, axis=tuple)`` as in the seed (``numpy.mean`` and friends map to
        the built-in methods). Mutually exclusive with ``method``.
    open_array_kwargs
        Seed compatibility: ``write_empty_chunks``, ``fill_value`` and (zarr v2)
        ``dimension_separator`` for the new levels.
    coarsening_z
        Integer factor (>= 1) along Z, for isotropic 3D pyramids.
    method
        ``"mean"`` (default for intensity images), ``"median"``, ``"min"``, ``"max"``,
        ``"mode"`` (default for label images) or ``"nearest"``. Integer mean and median are
        computed exactly and rounded to nearest, ties to even.
    edge
        ``"trim"`` (the seed's behaviour) drops border pixels that do not fill a window;
        ``"keep"`` reduces partial border windows over the pixels they have.
    labels
        Whether the image holds labels; default: detected from the metadata. Mean and median
        on labels are refused unless ``labels=False`` says the image is not a label image.
    memory_budget
        Bytes (or a string like ``"512MiB"``) the build may use for its blocks; default 256 MiB.
    workers
        Parallel block tasks; default: the usable CPU cores.
    progress
        Called with ``(blocks_done, blocks_total)`` after every block.
    cancel
        A callable returning True (or a ``threading.Event`` set) to stop between blocks;
        the build then raises :class:`BuildCancelled` and the image is unchanged.
    scheduler, executor
        Run the block tasks on a dask.distributed scheduler at this address, or on any
        ``concurrent.futures.Executor``. An active ``distributed.Client`` is used by default.
    storage_options
        For a URL: object-store settings beyond the environment's, such as ``endpoint``,
        ``region``, ``access_key_id``, ``secret_access_key``, ``profile``, ``allow_http``.

    Returns
    -------
    PyramidPlan
        What was built: every level's path, shape, chunks, scale and translation.

    Warns
    -----
    UserWarning
        When the image's label images (or, for a label image, its image) are left with a
        different number of levels, naming the command that brings them in step;
        :func:`build_dataset` builds an image and its labels together.

    Raises
    ------
    PyramidError
        (a ValueError) for every bad input, before anything is written.
    ImageBusyError
        If another build of the same image is running.
    BuildCancelled
        If ``cancel`` stopped the build.
    """
    options = BuildOptions(
        num_levels=num_levels,
        coarsening_xy=coarsening_xy,
        coarsening_z=coarsening_z,
        method=method,
        aggregation_function=aggregation_function,
        chunksize=chunksize,
        edge=edge,
        overwrite=overwrite,
        labels=labels,
        memory_budget=memory_budget,
        workers=workers,
        open_array_kwargs=open_array_kwargs,
    )
    build = iter_build(
        zarrurl,
        options,
        executor=executor,
        scheduler=scheduler,
        storage_options=storage_options,
    )
    plan = run_build(build, progress=progress, cancel=cancel)
    warn_labels_out_of_step(plan.image.store)
    return plan


def update_pyramid(
    *,
    zarrurl: str | os.PathLike[str],
    regions: Sequence[tuple[slice, ...]] | None = None,
    memory_budget: int | str | None = None,
    workers: int | None = None,
    progress: Callable[[int, int], Any] | None = None,
    cancel: Callable[[], bool] | Any | None = None,
    scheduler: str | None = None,
    executor: Executor | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> UpdateReport:
    """Refresh the levels of a built pyramid after level 0 changed, and nothing else.

    Recomputes only the write units (chunks, or shards) of levels 1..n whose level-0 window
    holds changed data, with the options the pyramid was built with; the result is what a
    full rebuild would write, byte for byte. Level 0 is never written.

    Parameters
    ----------
    zarrurl
        The image group (path or URL), as for :func:`build_pyramid`.
    regions
        Level-0 regions the caller changed, each a tuple of slices (one per axis, step 1;
        ``None`` bounds allowed), e.g. ``[(slice(0, 1), slice(100, 400), slice(50, 350))]``.
        None (default): found from the change record the build left beside level 1
        (``1/.napari-pyramids-record.json``: each level-0 chunk's size and modification
        time, or ETag). Changes outside the given regions are left for a later update to find.
    memory_budget, workers, progress, cancel, scheduler, executor, storage_options
        As for :func:`build_pyramid`; ``progress(done, total)`` counts the units rewritten.

    Returns
    -------
    UpdateReport
        ``status`` "unchanged" (nothing written), "updated" (``written`` units per level) or
        "rebuilt" (levels 1..n recomputed in full, for the reason in ``note``: an image with
        no change record matching its levels, e.g. built by an older version, or whose
        chunk layout changes with level 0's new shape).

    Raises
    ------
    PyramidError
        For an image without a pyramid, one not built by napari-pyramids, or a malformed
        region; nothing is written.
    ImageBusyError
        If a build or update of the same image is running.
    BuildCancelled
        If ``cancel`` stopped it: every level is readable, each unit old or new, and the
        next update finishes the work.
    """
    gen = iter_update(
        zarrurl,
        regions,
        memory_budget=memory_budget,
        workers=workers,
        executor=executor,
        scheduler=scheduler,
        storage_options=storage_options,
    )
    return run_update(gen, progress=progress, cancel=cancel)


def warn_labels_out_of_step(
    zarrurl: str | os.PathLike[str] | Store, storage_options: Mapping[str, Any] | None = None
) -> None:
    """A UserWarning for each label image of ``zarrurl`` (or, for a label image, itself) whose
    number of levels now differs from its image's, naming the command that fixes it."""
    try:
        mismatches = labels_out_of_step(open_image(zarrurl, storage_options))
    except PyramidError:
        return
    for mismatch in mismatches:
        warnings.warn(mismatch.message, UserWarning, stacklevel=3)


def lazy_pyramid(
    *,
    zarrurl: str | os.PathLike[str],
    num_levels: int = 2,
    coarsening_xy: int = 2,
    coarsening_z: int = 1,
    method: str | None = None,
    aggregation_function: Callable[..., Any] | None = None,
    edge: str = "trim",
    labels: bool | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> list[da.Array]:
    """The pyramid ``build_pyramid`` would write, as lazy dask arrays; nothing is written.

    Level 0 is read from its store (a disk or, by URL, an object store); every other level
    is computed on demand, chunk by chunk, with the same reducers as the build, so each
    value equals the one the build would store. Parameters are those of
    :func:`build_pyramid`.
    """
    options = BuildOptions(
        num_levels=num_levels,
        coarsening_xy=coarsening_xy,
        coarsening_z=coarsening_z,
        method=method,
        aggregation_function=aggregation_function,
        edge=edge,
        labels=labels,
    )
    return preview_pyramid(open_image(zarrurl, storage_options), options)


def preview_pyramid(image: OmeZarrImage, options: BuildOptions) -> list[da.Array]:
    """:func:`lazy_pyramid` of an open image, with the build's options; nothing is written.

    Only the options that shape the levels matter here (levels, factors, method, edge).
    """
    # dask.array takes ~0.4 s to import: only previews pay for it, never a build.
    from .pyramid.lazy import lazy_levels
    from .storage import open_level

    _, aggregation = choose_method(image, options)
    factors = level_factors(image, options)
    count = num_levels_for(image, options, factors)
    shapes = level_shapes(image, count, factors, options.edge)
    level0 = open_level(image, image.level0.path)
    return lazy_levels(level0, factors, len(shapes), aggregation, options.edge)
