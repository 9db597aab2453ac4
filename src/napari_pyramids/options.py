"""The options of a pyramid build: one type, declared once, parsed and checked once.

The library, the CLI and the widget all turn what they are given into a
:class:`BuildOptions`; the planner and the engine take nothing else. Construction checks every
value that can be checked without the image (types, ranges, names) and parses the text
people type (``"1,1,512,512"``, ``"512MiB"``). The checks that need the image (one chunk
length per axis, a Z axis to coarsen, mean on a label image) are the planner's.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import PyramidError, format_bytes
from .pyramid.methods import METHODS, Method, method_for_callable, method_named
from .pyramid.names import AUTO, EDGES

if TYPE_CHECKING:
    from .ome.image import OmeZarrImage

DEFAULT_MEMORY_BUDGET = 256 * 2**20
MIN_MEMORY_BUDGET = 16 * 2**20
OPEN_ARRAY_KEYS = frozenset({"write_empty_chunks", "fill_value", "dimension_separator"})


@dataclass(frozen=True)
class BuildOptions:
    """Every parameter of a build, checked and in one canonical form.

    Construct it with what a caller gives: besides the types below, ``chunksize`` may be
    text or any sequence, ``memory_budget`` a string or None, ``open_array_kwargs`` None. A
    bad value raises :class:`PyramidError` naming it and the fix, before any image is opened.
    The parameters are those of :func:`~napari_pyramids.build_pyramid`; once constructed:

    Attributes
    ----------
    num_levels : int or "auto"
        Total levels including level 0 (>= 1); "auto" goes down to about 256 px in Y and X.
    coarsening_xy, coarsening_z : int
        Factors between consecutive levels (>= 2 along Y and X, >= 1 along Z).
    method : str or None
        A name from :data:`~napari_pyramids.pyramid.methods.METHODS`; None chooses by image.
    aggregation_function : callable or None
        A seed caller's ``func(x, axis=tuple)``; never given together with ``method``.
    chunksize : tuple of int or None
        Chunk shape of the new levels (text such as ``"1,1,512,512"`` is parsed); None keeps
        level 0's.
    edge : str
        "trim" or "keep".
    overwrite : bool
        Replace existing levels.
    labels : bool or None
        Whether the image holds labels; None detects it from the metadata.
    memory_budget : int
        Bytes (a string such as ``"512MiB"`` is parsed; None gives 256 MiB).
    workers : int or None
        Parallel block tasks; None uses the usable CPU cores.
    open_array_kwargs : dict
        ``write_empty_chunks``, ``fill_value`` and ``dimension_separator`` (zarr v2).
    """

    num_levels: int | str = 2
    coarsening_xy: int = 2
    coarsening_z: int = 1
    method: str | None = None
    aggregation_function: Callable[..., Any] | None = None
    chunksize: tuple[int, ...] | None = None
    edge: str = "trim"
    overwrite: bool = False
    labels: bool | None = None
    memory_budget: int = DEFAULT_MEMORY_BUDGET
    workers: int | None = None
    open_array_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.edge, str) or self.edge not in EDGES:
            raise PyramidError(f"unknown edge {self.edge!r}; choose 'trim' or 'keep'")
        if not isinstance(self.overwrite, bool):
            raise PyramidError(f"overwrite must be True or False, got {self.overwrite!r}")
        _check_method(self.method, self.aggregation_function)
        canonical = {
            "coarsening_xy": _integer(
                self.coarsening_xy, "coarsening_xy", 2, " (use 2 to halve Y and X per level)"
            ),
            "coarsening_z": _integer(
                self.coarsening_z, "coarsening_z", 1, " (use 1 to keep every Z plane)"
            ),
            "num_levels": _num_levels(self.num_levels),
            "chunksize": parse_chunksize(self.chunksize),
            "open_array_kwargs": _open_array_kwargs(self.open_array_kwargs),
            "memory_budget": parse_memory_budget(self.memory_budget),
            "workers": None if self.workers is None else _integer(self.workers, "workers", 1),
            "labels": None if self.labels is None else bool(self.labels),
        }
        # Frozen: the parsed values replace the given ones once, here, and never change.
        for name, value in canonical.items():
            object.__setattr__(self, name, value)

    @property
    def chosen_method(self) -> Method | None:
        """The method asked for, by name or by function; None to choose by image kind."""
        if self.aggregation_function is not None:
            return method_for_callable(self.aggregation_function)
        if self.method is not None:
            return method_named(self.method)
        return None

    @property
    def write_empty_chunks(self) -> bool:
        """Whether chunks holding only the fill value are written (zarr's default: no)."""
        return bool(self.open_array_kwargs.get("write_empty_chunks", False))


def _integer(value: Any, name: str, minimum: int, hint: str = "") -> int:
    """``value`` as an int >= ``minimum``, refusing bools, floats and text."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise PyramidError(f"{name} must be an integer >= {minimum}, got {value!r}{hint}")
    if value < minimum:
        raise PyramidError(f"{name} must be an integer >= {minimum}, got {value}{hint}")
    return int(value)


def _num_levels(value: Any) -> int | str:
    """An int >= 1, or "auto"."""
    if isinstance(value, str) and value == AUTO:
        return AUTO
    return _integer(value, "num_levels", 1, " (1 means level 0 only)")


def _check_method(method: Any, aggregation_function: Any) -> None:
    """A known method name or a callable, not both."""
    if aggregation_function is not None:
        if method is not None:
            raise PyramidError("pass either method or aggregation_function, not both")
        if not callable(aggregation_function):
            raise PyramidError("aggregation_function must be callable like numpy.mean")
    elif method is not None and (not isinstance(method, str) or method not in METHODS):
        raise PyramidError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")


def _open_array_kwargs(value: Mapping[str, Any] | None) -> dict[str, Any]:
    """The seed's ``open_array_kwargs``, limited to the keys a new level can honour."""
    kwargs = dict(value or {})
    unknown = set(kwargs) - OPEN_ARRAY_KEYS
    if unknown:
        raise PyramidError(
            f"open_array_kwargs {sorted(unknown)} are not supported; new levels copy level "
            f"0's codecs and layout. Supported keys: {sorted(OPEN_ARRAY_KEYS)}"
        )
    if "write_empty_chunks" in kwargs and not isinstance(kwargs["write_empty_chunks"], bool):
        raise PyramidError("open_array_kwargs['write_empty_chunks'] must be True or False")
    return kwargs


def parse_memory_budget(value: int | str | None) -> int:
    """Bytes from an int or a string such as ``"512MiB"``; None gives the default."""
    if value is None:
        return DEFAULT_MEMORY_BUDGET
    try:
        if isinstance(value, str):
            # Imported here: dask adds ~0.1 s to every start otherwise.
            from dask.utils import parse_bytes

            budget = parse_bytes(value)
        else:
            budget = int(value)
    except (ValueError, TypeError):
        raise PyramidError(
            f"memory_budget {value!r} is not a size; use bytes or a string like '512MiB'"
        ) from None
    if budget < MIN_MEMORY_BUDGET:
        raise PyramidError(
            f"memory_budget {value!r} is below the {format_bytes(MIN_MEMORY_BUDGET)} minimum; "
            f"pass at least {format_bytes(MIN_MEMORY_BUDGET)}"
        )
    return budget


def parse_chunksize(
    value: str | Sequence[int] | None, image: OmeZarrImage | None = None
) -> tuple[int, ...] | None:
    """The chunk shape of new levels: None (or blank text) keeps level 0's.

    Parameters
    ----------
    value
        Text a person typed (``"1,1,512,512"``, brackets and spaces allowed) or a sequence
        of integers from a caller. A parsed tuple passes through unchanged.
    image
        When given, the entries are counted against its axes and messages name them.

    Raises
    ------
    PyramidError
        Naming the value, the axes when known, and the fix.
    """
    if value is None:
        return None
    if isinstance(value, str):
        values = _chunk_text(value, image)
        if values is None:
            return None
    else:
        values = _chunk_sequence(value, image)
    return tuple(_integer(c, "each chunksize entry", 1) for c in values)


def _chunk_text(value: str, image: OmeZarrImage | None) -> tuple[int, ...] | None:
    """Integers from typed text; the messages speak of what was typed."""
    text = value.strip().strip("()[]")
    if not text:
        return None
    try:
        values = tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        if image is None:
            raise PyramidError(
                f"chunksize {text!r} is not a comma-separated list of integers such as 1,1,512,512"
            ) from None
        raise PyramidError(
            f"chunk shape {text!r} is not a list of integers: give one per axis "
            f"({_axis_names(image)}), e.g. {','.join(map(str, image.level0.chunks))}, or "
            "leave it blank"
        ) from None
    if image is not None and len(values) != image.ndim:
        raise PyramidError(
            f"chunk shape {text!r} has {len(values)} numbers but the image has {image.ndim} "
            f"axes ({_axis_names(image)}); give one per axis or leave it blank for level 0's "
            "chunks"
        )
    return values


def _axis_names(image: OmeZarrImage) -> str:
    return ", ".join(a.name for a in image.axes)


def _chunk_sequence(value: Any, image: OmeZarrImage | None) -> Sequence[Any]:
    """A caller's sequence, one entry per axis when the image is known."""
    names = [a.name for a in image.axes] if image is not None else None
    if isinstance(value, bytes) or not isinstance(value, Sequence):
        count = f"{image.ndim} " if image is not None else ""
        axes = f" ({names})" if names is not None else ", one per axis"
        raise PyramidError(f"chunksize must be a sequence of {count}integers{axes}")
    if image is not None and len(value) != image.ndim:
        raise PyramidError(
            f"chunksize {tuple(value)} has {len(value)} entries but the image has "
            f"{image.ndim} axes {names}; give one chunk length per axis"
        )
    return value
