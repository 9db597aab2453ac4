"""Exceptions raised by the engine, and how messages show names and sizes."""

from __future__ import annotations


class PyramidError(ValueError):
    """A request that cannot be honoured; the message names the problem and the fix.

    It subclasses ValueError so that callers written against fractal-tasks-core's
    ``build_pyramid`` (which raises ValueError) keep catching it.
    """


class ImageBusyError(PyramidError):
    """Another build holds the lock of this image."""


class MemoryBudgetError(PyramidError):
    """The blocks a build needs do not fit its memory budget (a bigger budget would)."""


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
