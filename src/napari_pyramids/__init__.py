"""napari-pyramids: build multiscale pyramids for OME-Zarr images in place.

The library API lives in :mod:`napari_pyramids.core` and is re-exported here; the napari
widget, reader, writer and sample data are loaded by napari through ``napari.yaml``.
"""

from ._version import __version__
from .core import (
    BuildCancelled,
    ImageBusyError,
    LevelPlan,
    OmeZarrImage,
    Progress,
    PyramidError,
    PyramidPlan,
    build_pyramid,
    iter_build,
    lazy_pyramid,
    open_image,
    plan_pyramid,
)

__all__ = [
    "BuildCancelled",
    "ImageBusyError",
    "LevelPlan",
    "OmeZarrImage",
    "Progress",
    "PyramidError",
    "PyramidPlan",
    "__version__",
    "build_pyramid",
    "iter_build",
    "lazy_pyramid",
    "open_image",
    "plan_pyramid",
]
