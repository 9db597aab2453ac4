"""A pyramid as lazy dask arrays: the preview of a build, computed only where it is looked at.

Each level is ``map_blocks`` of the same :func:`coarsen` the engine runs, over chunks whose
boundaries fall on window boundaries, so a previewed tile is byte-identical to the built one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import dask.array as da

from .reduce import coarsen, output_length

# Coarse levels merge their ever smaller chunks back to about this many pixels per axis, so
# a preview of a big plane is a few hundred tasks, not tens of thousands.
MIN_PREVIEW_CHUNK = 256


def lazy_levels(
    level0: da.Array,
    factors: Sequence[int],
    num_levels: int,
    aggregation: str | Callable[..., Any],
    edge: str,
) -> list[da.Array]:
    """Levels 0..num_levels-1 computed lazily from ``level0`` by repeated ``coarsen``."""
    levels = [level0]
    for _ in range(1, num_levels):
        previous = levels[-1]
        if edge == "trim":
            previous = previous[
                tuple(slice(0, (n // f) * f) for n, f in zip(previous.shape, factors, strict=True))
            ]
        chunks = []
        for size, n, f in zip(previous.chunksize, previous.shape, factors, strict=True):
            if f == 1:
                chunks.append(size)
            else:
                wanted = max(size, MIN_PREVIEW_CHUNK * f)
                chunks.append(min(n, max(f, wanted // f * f)))
        previous = previous.rechunk(tuple(chunks))
        out_chunks = tuple(
            tuple(output_length(c, f, edge) for c in axis_chunks)
            for axis_chunks, f in zip(previous.chunks, factors, strict=True)
        )
        levels.append(
            previous.map_blocks(
                coarsen,
                factors=tuple(factors),
                method=aggregation,
                edge=edge,
                chunks=out_chunks,
                dtype=previous.dtype,
                meta=previous._meta,
            )
        )
    return levels
