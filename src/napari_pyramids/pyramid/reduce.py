"""Block reducers: coarsen an in-memory block by integer factors along some axes.

Every reducer works on the strided views ``x[o0::f0, o1::f1, ...]`` of the block, one per
offset inside the window, visited in a fixed order. That makes each output pixel depend only
on its own window, never on where the block starts or how it is laid out in memory: a pyramid
computed block by block is byte-identical to one computed on the whole level at once.

Rounding: integer results of mean and median are rounded to the nearest integer, ties to
even (as :func:`numpy.rint`), computed in a wider integer type with no float copy of the
block. The seed truncated (``astype``), which biases every level downwards.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import PyramidError

METHODS = ("mean", "median", "min", "max", "mode", "nearest")
EDGES = ("trim", "keep")

# Reducers run slab by slab over this many input bytes, so their temporaries (stacked
# windows, sort buffers, wide sums) stay a small constant whatever the block size.
SLAB_BYTES = 4 * 2**20
# Peak temporaries of one slab, as a multiple of SLAB_BYTES (measured with tracemalloc on
# uint8, uint16 and float32; tests/core/test_reducers.py keeps these honest).
SLAB_WORK = {
    "mean": 2.0,
    "min": 0.5,
    "max": 0.5,
    "nearest": 0.5,
    "median": 6.0,
    "mode": 6.0,
    "callable": 8.0,
}


def working_memory(block_bytes: int, window_size: int, method: str) -> int:
    """Upper bound of the bytes :func:`coarsen` allocates: its output plus one slab's work."""
    return int(block_bytes / window_size + SLAB_WORK[method] * min(SLAB_BYTES, block_bytes))


Reducer = Callable[[np.ndarray, Sequence[int]], np.ndarray]


def output_length(n: int, factor: int, edge: str) -> int:
    """Length of a coarsened axis: whole windows only ("trim") or partial ones too ("keep")."""
    return n // factor if edge == "trim" else -(-n // factor)


def _window_views(x: np.ndarray, window: Sequence[int]) -> list[np.ndarray]:
    """One strided view per offset inside the window, in row-major offset order."""
    out_shape = tuple(n // w for n, w in zip(x.shape, window, strict=True))
    views = []
    for offset in itertools.product(*(range(w) for w in window)):
        index = tuple(
            slice(o, o + w * n, w) for o, w, n in zip(offset, window, out_shape, strict=True)
        )
        views.append(x[index])
    return views


def _round_divide(total: np.ndarray, count: int, dtype: np.dtype) -> np.ndarray:
    """``rint(total / count)`` in integer arithmetic (ties to even), cast to ``dtype``.

    ``total`` is consumed: adding half the count and dividing in place rounds half up, and
    the exact ties (now multiples of ``count``) that landed on an odd number step back down.
    """
    total += count // 2
    tie = (total % count == 0) if count % 2 == 0 else None
    total //= count
    if tie is not None:
        total -= tie & (total & 1).astype(bool)
    return total.astype(dtype)


def _sum_dtype(dtype: np.dtype, count: int) -> np.dtype | None:
    """An integer type wide enough to sum ``count`` values of ``dtype``, if one exists."""
    info = np.iinfo(dtype)
    for candidate in (np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64):
        wide = np.iinfo(candidate)
        if info.min * count >= wide.min and info.max * count <= wide.max:
            return np.dtype(candidate)
    return None


def _mean(x: np.ndarray, window: Sequence[int]) -> np.ndarray:
    count = math.prod(window)
    views = _window_views(x, window)
    if x.dtype.kind == "f":
        total = views[0].astype(np.float64)
        for view in views[1:]:
            total += view
        total /= count
        return total.astype(x.dtype)
    wide = _sum_dtype(x.dtype, count)
    if wide is None:
        # 64-bit integers: split each value into multiple and remainder of ``count`` so the
        # sums cannot overflow, then recombine exactly.
        quot = views[0] // count
        rem = views[0] % count
        for view in views[1:]:
            quot += view // count
            rem += view % count
        extra_q, extra_r = np.divmod(rem, count)
        quot += extra_q
        quot += (2 * extra_r + (quot & 1)) > count
        return quot.astype(x.dtype)
    if _sums_fit(x, count):
        wide = x.dtype
    total = _window_sum(x, window, wide)
    if count & (count - 1) == 0:
        return _round_shift(total, count.bit_length() - 1, x.dtype)
    return _round_divide(total, count, x.dtype)


def _sums_fit(x: np.ndarray, count: int) -> bool:
    """Whether window sums (plus the rounding's half count) fit ``x``'s own integer type.

    Microscopy data rarely fills its type (12-bit cameras in uint16), and summing in the
    narrow type halves the memory traffic; one pass over the block to find its range is
    cheaper than that. The sums are exact either way, so the result does not change.
    """
    if x.size == 0:
        return False
    info = np.iinfo(x.dtype)
    if int(x.max()) * count + count // 2 > info.max:
        return False
    return x.dtype.kind == "u" or int(x.min()) * count >= info.min


def _window_sum(x: np.ndarray, window: Sequence[int], wide: np.dtype) -> np.ndarray:
    """Exact integer sum of each whole window, in ``wide`` (which must hold every sum).

    Axis by axis, outermost first: the first additions then run over whole contiguous rows
    and only the last, on data already shrunk, strides within rows. Integer sums are exact
    in any order, so this equals the sum of the window views.
    """
    total = x
    for axis, w in enumerate(window):
        if w == 1:
            continue
        n = total.shape[axis] // w
        parts = []
        for offset in range(w):
            index = [slice(None)] * total.ndim
            index[axis] = slice(offset, offset + w * n, w)
            parts.append(total[tuple(index)])
        # Casting while adding keeps the temporaries at half the block (the sums of one
        # axis) instead of a whole widened copy of it.
        total = np.add(parts[0], parts[1], dtype=wide)
        for part in parts[2:]:
            total += part
    return total if total is not x else x.astype(wide)


def _round_shift(total: np.ndarray, shift: int, dtype: np.dtype) -> np.ndarray:
    """``rint(total / 2**shift)``, ties to even, by shifts; cast to ``dtype``; consumes total.

    With ``q = total >> shift`` (floor, also for negative sums), adding ``2**(shift-1) - 1 +
    (q & 1)`` before shifting carries into ``q`` exactly when the remainder is above half, or
    is half and ``q`` is odd. The sum type leaves room for the addition (see _sum_dtype).
    """
    if shift == 0:
        return total.astype(dtype)
    odd = total >> shift
    odd &= 1
    total += (1 << (shift - 1)) - 1
    total += odd
    total >>= shift
    return total.astype(dtype)


def _extreme(ufunc: np.ufunc) -> Reducer:
    def reduce(x: np.ndarray, window: Sequence[int]) -> np.ndarray:
        views = _window_views(x, window)
        out = views[0].copy()
        for view in views[1:]:
            ufunc(out, view, out=out)
        return out

    return reduce


def _stacked(x: np.ndarray, window: Sequence[int]) -> np.ndarray:
    """Windows gathered along a new last axis, in the same fixed offset order."""
    return np.stack(_window_views(x, window), axis=-1)


def _median(x: np.ndarray, window: Sequence[int]) -> np.ndarray:
    med = np.median(_stacked(x, window), axis=-1)
    if x.dtype.kind in "iub":
        return np.rint(med).astype(x.dtype)
    return med.astype(x.dtype)


def _mode(x: np.ndarray, window: Sequence[int]) -> np.ndarray:
    """Most frequent value of each window; ties go to the smallest value."""
    values = np.sort(_stacked(x, window), axis=-1)
    width = values.shape[-1]
    best = values[..., 0].copy()
    best_count = np.zeros(best.shape, dtype=np.int32)
    for j in range(width):
        candidate = values[..., j]
        count = np.zeros(best.shape, dtype=np.int32)
        for k in range(width):
            count += values[..., k] == candidate
        better = count > best_count
        best[better] = candidate[better]
        best_count[better] = count[better]
    return best


def _nearest(x: np.ndarray, window: Sequence[int]) -> np.ndarray:
    return _window_views(x, window)[0].copy()


_REDUCERS: dict[str, Reducer] = {
    "mean": _mean,
    "median": _median,
    "min": _extreme(np.minimum),
    "max": _extreme(np.maximum),
    "mode": _mode,
    "nearest": _nearest,
}

# Seed callers pass numpy functions as ``aggregation_function``; the ones with an exact
# counterpart here get it (same values, rounded instead of truncated, and much faster).
_NUMPY_EQUIVALENTS = {
    np.mean: "mean",
    np.median: "median",
    np.min: "min",
    np.amin: "min",
    np.max: "max",
    np.amax: "max",
}


def method_for_callable(func: Callable[..., Any]) -> str | None:
    """The built-in method equivalent to a numpy aggregation function, if any."""
    for known, name in _NUMPY_EQUIVALENTS.items():
        if func is known:
            return name
    return None


def _callable_reducer(func: Callable[..., Any]) -> Reducer:
    """Call ``func(windows, axis=...)`` like ``dask.array.coarsen`` does, then cast back."""

    def reduce(x: np.ndarray, window: Sequence[int]) -> np.ndarray:
        split: list[int] = []
        axes = []
        for n, w in zip(x.shape, window, strict=True):
            split += [n // w, w]
            axes.append(len(split) - 1)
        result = np.asarray(func(x.reshape(split), axis=tuple(axes)))
        if result.shape != tuple(split[0::2]):
            raise PyramidError(
                f"aggregation_function {getattr(func, '__name__', func)!r} returned shape "
                f"{result.shape} for windows {tuple(split[0::2])}; it must reduce over the "
                "given axes like numpy.mean(x, axis=...)"
            )
        if x.dtype.kind in "iub" and result.dtype.kind in "fc":
            result = np.rint(result)
        return result.astype(x.dtype)

    return reduce


def reducer_for(method: str | Callable[..., Any]) -> Reducer:
    """The block reducer of a method name or of a callable ``func(x, axis=...)``."""
    if callable(method):
        return _callable_reducer(method)
    try:
        return _REDUCERS[method]
    except KeyError:
        raise PyramidError(
            f"unknown method {method!r}; choose one of {', '.join(METHODS)}"
        ) from None


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
        A name from :data:`METHODS` or a callable ``func(x, axis=tuple)``.
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
