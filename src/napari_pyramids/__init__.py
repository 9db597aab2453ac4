"""napari-pyramids: build multiscale pyramids for OME-Zarr images in place.

The library: :func:`build_pyramid` (keyword-compatible with fractal-tasks-core 1.x),
:func:`build_dataset` (every image of a plate, well, collection or folder, with its labels),
:func:`update_pyramid` (refresh what depends on changed level-0 data) and
:func:`lazy_pyramid`; the napari reader, writer, sample data and widget are loaded by napari
through ``napari.yaml`` from :mod:`napari_pyramids._napari`.
"""

from ._version import __version__
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
