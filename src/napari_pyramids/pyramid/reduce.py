"""Coarsen a block by a method: whole and partial border windows, in bounded slabs.

The reducers themselves are in :mod:`.kernels`, and which one a method uses is in its
:mod:`.methods` record; this module applies one to a block of any size within a known
working memory.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .kernels import Reducer
from .methods import method_named, reducer_for
from .names import EDGES as EDGES  # where the widget looks them up

# Reducers run slab by slab over this many input bytes, so their temporaries (stacked
# windows, sort buffers, wide sums) stay a small constant whatever the block size.
SLAB_BYTES = 4 * 2**20


def working_memory(block_bytes: int, window_size: int, method: str) -> int:
    """Upper bound of the bytes :func:`coarsen` allocates: its output plus one slab's work."""
    work = method_named(method).slab_work
    return int(block_bytes / window_size + work * min(SLAB_BYTES, block_bytes))


def output_length(n: int, factor: int, edge: str) -> int:
    """Length of a coarsened axis: whole windows only ("trim") or partial ones too ("keep")."""
    return n // factor if edge == "trim" else -(-n // factor)


def coarsen(
    block: np.ndarray,
    factors: Sequence[int],
    method: str | Callable[..., Any],
    edge: str = "trim",
) -> np.ndarray:
    """Coarsen ``block`` by integer ``factors`` per axis.

    Parameters
    ----------
    block
        The data; its dtype is kept.
    factors
        One integer >= 1 per axis of ``block``.
    method
        A method name (:data:`~.methods.METHODS`) or a callable ``func(x, axis=tuple)``.
    edge
        ``"trim"`` drops the pixels that do not fill a whole window (as the seed and
        ``dask.array.coarsen(trim_excess=True)``); ``"keep"`` reduces the partial windows at
        the far border over the pixels they have.

    Returns
    -------
    numpy.ndarray
        The coarsened block, of shape ``output_length(n, f, edge)`` per axis.
    """
    reduce = reducer_for(method)
    if block.dtype == bool and not callable(method):
        # Booleans reduce as 0/1 bytes: mean and median become a majority vote (ties to 0).
        return coarsen(block.view(np.uint8), factors, method, edge).astype(bool)
    trimmed = tuple((n // f) * f for n, f in zip(block.shape, factors, strict=True))
    out_shape = tuple(output_length(n, f, edge) for n, f in zip(block.shape, factors, strict=True))
    out = np.empty(out_shape, dtype=block.dtype)
    # Each axis splits into its whole windows and, in "keep" mode, one partial window at the
    # end; every combination of those pieces is reduced with its own window size.
    pieces_per_axis = []
    for n, f, t in zip(block.shape, factors, trimmed, strict=True):
        pieces = [(slice(0, t), slice(0, t // f), f)] if t else []
        if edge == "keep" and n > t:
            pieces.append((slice(t, n), slice(t // f, t // f + 1), n - t))
        pieces_per_axis.append(pieces)
    for combo in itertools.product(*pieces_per_axis):
        source = tuple(p[0] for p in combo)
        target = tuple(p[1] for p in combo)
        window = tuple(p[2] for p in combo)
        _reduce_in_slabs(reduce, block[source], window, out[target])
    return out


def _reduce_in_slabs(
    reduce: Reducer, x: np.ndarray, window: Sequence[int], out: np.ndarray
) -> None:
    """Fill ``out`` with ``reduce(x, window)``, at most about SLAB_BYTES of ``x`` at a time."""
    axis = next((a for a, n in enumerate(out.shape) if n > 1), None)
    if x.nbytes <= SLAB_BYTES or axis is None:
        out[...] = reduce(x, window)
        return
    rows = out.shape[axis]
    per_row = x.nbytes // rows
    deeper = any(n > 1 for n in out.shape[axis + 1 :])
    step = 1 if per_row > SLAB_BYTES and deeper else max(1, SLAB_BYTES // per_row)
    for start in range(0, rows, step):
        stop = min(start + step, rows)
        src = [slice(None)] * x.ndim
        dst = [slice(None)] * x.ndim
        src[axis] = slice(start * window[axis], stop * window[axis])
        dst[axis] = slice(start, stop)
        if step == 1 and deeper:
            _reduce_in_slabs(reduce, x[tuple(src)], window, out[tuple(dst)])
        else:
            out[tuple(dst)] = reduce(x[tuple(src)], window)
