"""The engine of napari-pyramids: no Qt, no napari; plain data in and out."""

from .api import build_pyramid, lazy_pyramid
from .engine import Progress, iter_build, run_build
from .errors import BuildCancelled, ImageBusyError, PyramidError
from .image import OmeZarrImage, open_image
from .plan import LevelPlan, PyramidPlan, Stage, plan_pyramid

__all__ = [
    "BuildCancelled",
    "ImageBusyError",
    "LevelPlan",
    "OmeZarrImage",
    "Progress",
    "PyramidError",
    "PyramidPlan",
    "Stage",
    "build_pyramid",
    "iter_build",
    "lazy_pyramid",
    "open_image",
    "plan_pyramid",
    "run_build",
]
