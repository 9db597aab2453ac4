"""napari-pyramids: build multiscale pyramids for OME-Zarr images in place.

The library: :func:`build_pyramid` (keyword-compatible with fractal-tasks-core 1.x),
:func:`build_dataset` (every image of a plate, well, collection or folder, with its labels),
:func:`update_pyramid` (refresh what depends on changed level-0 data) and
:func:`lazy_pyramid`; the napari reader, writer, sample data and widget are loaded by napari
through ``napari.yaml`` from :mod:`napari_pyramids._napari`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_attributes
from ._version import __version__

if TYPE_CHECKING:
    from .api import build_pyramid, lazy_pyramid, update_pyramid
    from .dataset_build import DatasetProgress, DatasetReport, ImageResult, build_dataset
    from .datasets import Dataset, DatasetImage, find_images
    from .engine import Progress, iter_build, run_build
    from .errors import BuildCancelled, ImageBusyError, MemoryBudgetError, PyramidError
    from .images import open_image
    from .ome.image import OmeZarrImage
    from .options import BuildOptions
    from .pyramid.plan import LevelPlan, PyramidPlan, Stage, plan_pyramid
    from .update import UpdateReport, iter_update

# Where each public name lives: imported on first use, so that ``napari-pyramids update`` on
# an unchanged image starts without numpy, zarr or dask (see ``unchanged.py``).
_HOMES = {
    "build_pyramid": ".api",
    "lazy_pyramid": ".api",
    "update_pyramid": ".api",
    "DatasetProgress": ".dataset_build",
    "DatasetReport": ".dataset_build",
    "ImageResult": ".dataset_build",
    "build_dataset": ".dataset_build",
    "Dataset": ".datasets",
    "DatasetImage": ".datasets",
    "find_images": ".datasets",
    "Progress": ".engine",
    "iter_build": ".engine",
    "run_build": ".engine",
    "BuildCancelled": ".errors",
    "ImageBusyError": ".errors",
    "MemoryBudgetError": ".errors",
    "PyramidError": ".errors",
    "open_image": ".images",
    "OmeZarrImage": ".ome.image",
    "BuildOptions": ".options",
    "LevelPlan": ".pyramid.plan",
    "PyramidPlan": ".pyramid.plan",
    "Stage": ".pyramid.plan",
    "plan_pyramid": ".pyramid.plan",
    "UpdateReport": ".update",
    "iter_update": ".update",
}


__getattr__, __dir__ = lazy_attributes(__name__, _HOMES, globals())


__all__ = [
    "BuildCancelled",
    "BuildOptions",
    "Dataset",
    "DatasetImage",
    "DatasetProgress",
    "DatasetReport",
    "ImageBusyError",
    "ImageResult",
    "LevelPlan",
    "MemoryBudgetError",
    "OmeZarrImage",
    "Progress",
    "PyramidError",
    "PyramidPlan",
    "Stage",
    "UpdateReport",
    "__version__",
    "build_dataset",
    "build_pyramid",
    "find_images",
    "iter_build",
    "iter_update",
    "lazy_pyramid",
    "open_image",
    "plan_pyramid",
    "run_build",
    "update_pyramid",
]
