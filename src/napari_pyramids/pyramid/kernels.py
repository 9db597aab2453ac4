"""Window reducers: each turns a block into one value per window of given size.

Every reducer works on the strided views ``x[o0::f0, o1::f1, ...]`` of the block, one per
offset inside the window, visited in a fixed order. That makes each output pixel depend only
on its own window, never on where the block starts or how it is laid out in memory: a pyramid
computed block by block is byte-identical to one computed on the whole level at once.

Rounding: integer results of mean and median are rounded to the nearest integer, ties to
even (as :func:`numpy.rint`), computed in a wider integer type with no float copy of the
block. The seed truncated (``astype``), which biases every level downwards.

Which reducer belongs to which method name is :mod:`.methods`' business, not this module's.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import PyramidError

Reducer = Callable[[np.ndarray, Sequence[int]], np.ndarray]


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


def mean(x: np.ndarray, window: Sequence[int]) -> np.ndarray:
    """Mean of each window; integers exactly, rounded to nearest with ties to even."""
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
    """A reducer folding the window views with ``ufunc`` (minimum or maximum)."""

    def reduce(x: np.ndarray, window: Sequence[int]) -> np.ndarray:
        views = _window_views(x, window)
        out = views[0].copy()
        for view in views[1:]:
            ufunc(out, view, out=out)
        return out

    return reduce


minimum = _extreme(np.minimum)
maximum = _extreme(np.maximum)


def _stacked(x: np.ndarray, window: Sequence[int]) -> np.ndarray:
    """Windows gathered along a new last axis, in the same fixed offset order."""
    return np.stack(_window_views(x, window), axis=-1)


def median(x: np.ndarray, window: Sequence[int]) -> np.ndarray:
    """Median of each window; integers rounded to nearest with ties to even."""
    med = np.median(_stacked(x, window), axis=-1)
    if x.dtype.kind in "iub":
        return np.rint(med).astype(x.dtype)
    return med.astype(x.dtype)


def mode(x: np.ndarray, window: Sequence[int]) -> np.ndarray:
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


def nearest(x: np.ndarray, window: Sequence[int]) -> np.ndarray:
    """The first pixel of each window (its lowest corner)."""
    return _window_views(x, window)[0].copy()


def wrap_callable(func: Callable[..., Any]) -> Reducer:
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
