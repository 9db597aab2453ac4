"""napari-pyramids: build multiscale pyramids for OME-Zarr images in place.

The library API lives in :mod:`napari_pyramids.core` and is re-exported here; the napari
widget, reader, writer and sample data are loaded by napari through ``napari.yaml``.
"""

from . import core
from ._version import __version__
from .core import *  # noqa: F403 - the public API is exactly core's

__all__ = ["__version__", *core.__all__]
