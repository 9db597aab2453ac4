"""The downsampling methods: one record per method, in one closed registry.

Everything the code needs to know about a method lives in its :class:`Method` record: the
reducer, the working memory it needs, whether its pixel stands for the whole window (which
moves the level's origin to the window's centre in the metadata), whether it keeps label ids
intact, and which numpy functions a seed caller may pass for it. The callable a caller passes
as ``aggregation_function`` is the ``callable`` record; its reducer wraps that function.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import PyramidError
from . import kernels
from .kernels import Reducer


@dataclass(frozen=True)
class Method:
    """One downsampling method and every fact the code needs about it.

    Attributes
    ----------
    name
        What callers pass as ``method`` (CLI ``--method``), and the multiscales ``type``.
    reducer
        The window reducer; None for ``callable``, whose reducer wraps the caller's function.
    slab_work
        Peak temporaries of the reducer on one slab, as a multiple of the slab's bytes
        (measured with tracemalloc on uint8, uint16 and float32; tests/core/test_reducers.py
        keeps these honest). The planner sizes blocks with it.
    window
        Whether a pixel summarises its whole window, so its centre sits at the window's
        centre (half a window's translation per level); ``nearest`` keeps the window's first
        pixel, whose centre does not move.
    label_safe
        Whether every output pixel is one of its window's values, so label ids survive; the
        others would invent ids and are refused on label images. A caller's own function is
        trusted, as in the seed.
    numpy_equivalents
        numpy functions a seed caller may pass as ``aggregation_function`` for this method.
    """

    name: str
    reducer: Reducer | None = field(repr=False)
    slab_work: float
    window: bool
    label_safe: bool
    numpy_equivalents: tuple[Callable[..., Any], ...] = field(default=(), repr=False)


MEAN = Method(
    "mean", kernels.mean, 2.0, window=True, label_safe=False, numpy_equivalents=(np.mean,)
)
MEDIAN = Method(
    "median", kernels.median, 6.0, window=True, label_safe=False, numpy_equivalents=(np.median,)
)
MIN = Method(
    "min", kernels.minimum, 0.5, window=True, label_safe=True, numpy_equivalents=(np.min, np.amin)
)
MAX = Method(
    "max", kernels.maximum, 0.5, window=True, label_safe=True, numpy_equivalents=(np.max, np.amax)
)
MODE = Method("mode", kernels.mode, 6.0, window=True, label_safe=True)
NEAREST = Method("nearest", kernels.nearest, 0.5, window=False, label_safe=True)
CALLABLE = Method("callable", None, 8.0, window=True, label_safe=True)

# The methods a caller may name, in the order the CLI and the widget offer them.
BUILT_IN: tuple[Method, ...] = (MEAN, MEDIAN, MIN, MAX, MODE, NEAREST)
METHODS: tuple[str, ...] = tuple(method.name for method in BUILT_IN)
_BY_NAME = {method.name: method for method in (*BUILT_IN, CALLABLE)}


def method_named(name: str) -> Method:
    """The record of a method name (``callable`` included); unknown names are refused."""
    try:
        return _BY_NAME[name]
    except (KeyError, TypeError):
        raise PyramidError(
            f"unknown method {name!r}; choose one of {', '.join(METHODS)}"
        ) from None


def method_for_callable(func: Callable[..., Any]) -> Method:
    """The built-in method a numpy aggregation function stands for, else ``callable``.

    Seed callers pass numpy functions as ``aggregation_function``; the ones with an exact
    counterpart here get it (same values, rounded instead of truncated, and much faster).
    """
    for method in BUILT_IN:
        if any(func is known for known in method.numpy_equivalents):
            return method
    return CALLABLE


def default_method(is_label: bool) -> Method:
    """Mode for label images (it never invents an id), mean for intensity images."""
    return MODE if is_label else MEAN


def reducer_for(aggregation: str | Callable[..., Any]) -> Reducer:
    """The reducer of a method name, or of a caller's function ``func(x, axis=tuple)``."""
    if callable(aggregation):
        return kernels.wrap_callable(aggregation)
    reducer = method_named(aggregation).reducer
    if reducer is None:
        raise PyramidError("method 'callable' needs the function: pass aggregation_function")
    return reducer
