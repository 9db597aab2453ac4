"""Exceptions raised by the engine, and how messages show names and sizes."""

from __future__ import annotations

from typing import Any


class PyramidError(ValueError):
    """A request that cannot be honoured; the message names the problem and the fix.

    It subclasses ValueError so that callers written against fractal-tasks-core's
    ``build_pyramid`` (which raises ValueError) keep catching it.

    The fix is given in the words of the library and the CLI (``num_levels``,
    ``--overwrite``). For a door with other words (the napari widget), an error whose fix
    names a parameter is one of the subclasses below: ``problem`` is the message without the
    fix and the attributes say what a fix needs, so the door words its own.
    """

    problem: str = ""

    def __init__(self, message: str, problem: str | None = None) -> None:
        super().__init__(message)
        self.problem = problem if problem is not None else message

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled whole (a dask worker's error reaches the client): the default pickling
        # calls the class with ``args`` alone and would drop the fields.
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type[PyramidError], args: tuple[Any, ...], fields: dict[str, Any]) -> Any:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(fields)
    return error


class TooManyLevelsError(PyramidError):
    """A level would be smaller than one pixel; ``most`` levels are possible."""

    def __init__(self, message: str, problem: str, most: int) -> None:
        super().__init__(message, problem)
        self.most = most


class NoZAxisError(PyramidError):
    """A Z factor was asked of an image without a Z axis."""


class LabelMethodError(PyramidError):
    """A method that invents label ids was asked of a label image."""


class LevelExistsError(PyramidError):
    """A level the build would write exists and overwriting was not asked for."""


class ImageBusyError(PyramidError):
    """Another build holds the lock of this image."""


class MemoryBudgetError(PyramidError):
    """The blocks a build needs do not fit its memory budget (a bigger budget would).

    ``problem`` is the message without the fix.
    """


class BuildCancelled(Exception):  # noqa: N818 - a cancel is not an error
    """The build was cancelled; the image was left as it was before the build."""


def visible_text(text: str, keep_newlines: bool = False) -> str:
    """``text`` with invisible and control characters escaped (``\\n``, ``\\u202e``).

    Names in an image's metadata and folder names come from strangers: on a terminal an
    escape sequence would recolour, retitle or clear it; in a label a newline would forge a
    line and a right-to-left override would show a name backwards. The CLI and the widget
    show them through this.
    """
    keep = "\n" if keep_newlines else ""
    return "".join(
        c if c.isprintable() or c in keep else c.encode("unicode_escape").decode("ascii")
        for c in text
    )


def format_bytes(n: int) -> str:
    """``n`` bytes for a message, e.g. ``'1.50 GiB'`` (dask's spelling)."""
    # Imported here: dask adds ~0.1 s to every start otherwise.
    from dask.utils import format_bytes as dask_format_bytes

    return dask_format_bytes(n)
