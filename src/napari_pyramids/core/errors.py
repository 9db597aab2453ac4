"""Exceptions raised by the engine: one clear sentence for the user, nothing written."""

from __future__ import annotations


class PyramidError(ValueError):
    """A request that cannot be honoured; the message names the problem and the fix.

    It subclasses ValueError so that callers written against fractal-tasks-core's
    ``build_pyramid`` (which raises ValueError) keep catching it.
    """


class ImageBusyError(PyramidError):
    """Another build holds the lock of this image."""


class BuildCancelled(Exception):  # noqa: N818 - a cancel is not an error
    """The build was cancelled; the image was left as it was before the build."""
