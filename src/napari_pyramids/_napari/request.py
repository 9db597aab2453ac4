"""What the Pyramid Builder widget asks for, checked with messages written for its controls.

The widget holds no logic of its own: it reads its controls into
:class:`~napari_pyramids.options.BuildOptions`, asks here for defaults, a plan or a refusal,
and shows the answer. The checks are those of
:func:`~napari_pyramids.pyramid.plan.plan_pyramid`, plus the refusals a person clicking
needs before a build starts (an image that already has the pyramid asked for, a read-only
image), phrased in terms of the widget's controls. Qt-free, so it is tested without a viewer.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from ..datasets import place_name
from ..errors import PyramidError
from ..ome.image import OmeZarrImage
from ..options import BuildOptions
from ..pyramid.methods import default_method
from ..pyramid.plan import (
    PyramidPlan,
    auto_num_levels,
    level_factors,
    max_num_levels,
    plan_pyramid,
)
from .texts import in_widget_words

# The spin boxes never offer more than these, whatever the image allows.
MOST_LEVELS = 32
MOST_FACTOR = 16


@dataclass(frozen=True)
class ControlLimits:
    """The largest values the widget's spin boxes offer for an image."""

    num_levels: int
    coarsening_xy: int
    coarsening_z: int


SAVE_A_COPY = (
    "To keep a copy with its pyramid, select its layers and use File > Save Selected "
    "Layers... with the writer 'OME-Zarr with pyramid'."
)


def default_request(image: OmeZarrImage) -> BuildOptions:
    """Sensible starting values: levels down to about 256 px, mode for labels, level 0 chunks,
    and a Z factor that follows the voxel size (:func:`voxel_z_factor`)."""
    factors = level_factors(image, BuildOptions())
    num_levels = auto_num_levels(image, factors)
    return BuildOptions(
        num_levels=num_levels,
        coarsening_z=voxel_z_factor(image, factors[image.yx_axes[1]], num_levels),
        method=default_method(image.is_label).name,
    )


def voxel_z_factor(image: OmeZarrImage, coarsening_xy: int, num_levels: int) -> int:
    """The Z factor that keeps the coarsest level's voxels closest to cubes.

    Coarsening Y and X alone turns a near-isotropic volume into flat slabs (96 planes of
    4 x 4 µm pixels at 1 µm apart); coarsening Z as much as Y and X on a stack whose planes
    are far apart throws planes away for nothing. Z should be coarsened once Y and X reach
    its spacing; with one factor per axis for every level, that is the factor (1 up to the
    Y/X factor) that brings the coarsest level's Z spacing closest to its Y/X spacing, ties
    to the smaller, and that keeps at least one plane. 1 without a Z axis.
    """
    z = image.z_axis
    if z is None or num_levels < 2:
        return 1
    y, x = image.yx_axes
    scale = image.scale0
    spacing_xy = math.sqrt(abs(scale[y] * scale[x]))
    if not spacing_xy or not scale[z]:
        return 1
    steps = num_levels - 1
    coarsest_xy = spacing_xy * coarsening_xy**steps

    def anisotropy(factor: int) -> float:
        return abs(math.log(abs(scale[z]) * factor**steps / coarsest_xy))

    planes = image.level0.shape[z]
    fitting = [f for f in range(1, coarsening_xy + 1) if planes // f**steps >= 1]
    return min(fitting, key=lambda f: (anisotropy(f), f))


def control_limits(image: OmeZarrImage, options: BuildOptions) -> ControlLimits:
    """How far each spin box may go for ``image``: factors that leave at least one pixel,
    and as many levels as the factors chosen allow (none smaller than one pixel)."""
    shape = image.level0.shape
    y, x = image.yx_axes
    most_xy = max(2, min(MOST_FACTOR, shape[y], shape[x]))
    z = image.z_axis
    most_z = 1 if z is None else max(1, min(MOST_FACTOR, shape[z]))
    factors = list(level_factors(image, BuildOptions()))
    factors[y] = factors[x] = min(options.coarsening_xy, most_xy)
    if z is not None:
        factors[z] = min(options.coarsening_z, most_z)
    levels = max_num_levels(image, factors, options.edge, limit=MOST_LEVELS)
    return ControlLimits(num_levels=max(levels, 2), coarsening_xy=most_xy, coarsening_z=most_z)


def check_writable(image: OmeZarrImage) -> None:
    """Refuse an image the build could not write into (read-only folder, file or mount)."""
    root = image.root
    targets = [root, root / image.metadata_file]
    blocked = [p for p in targets if os.path.lexists(p) and not os.access(p, os.W_OK)]
    if blocked:
        raise PyramidError(
            f"{root} is read-only ({blocked[0]} cannot be written): a pyramid is built inside "
            "the image, so make it writable or copy it somewhere writable. Nothing was written."
        )


def check_existing_pyramid(image: OmeZarrImage, options: BuildOptions) -> None:
    """Refuse to rebuild levels the image already has unless 'overwrite' is ticked."""
    existing = len(image.level_paths) if image.has_multiscales else 1
    if existing < 2 or options.overwrite:
        return
    if existing == options.num_levels:
        raise PyramidError(
            f"{place_name(image)} is already multiscale with the {existing} levels asked for; "
            "tick 'overwrite' to rebuild them, or choose another number of levels."
        )
    raise PyramidError(
        f"{place_name(image)} already has {existing} levels; tick 'overwrite' to replace them "
        f"with {options.num_levels} levels."
    )


def plan_request(image: OmeZarrImage, options: BuildOptions) -> PyramidPlan:
    """The plan of a build the widget would start, or the refusal it must show.

    Raises
    ------
    PyramidError
        With one sentence naming the problem and the control that fixes it.
    """
    try:
        image.store.check_writable()
    except PyramidError as exc:
        # An image read over HTTP, say: it can still be saved elsewhere with its pyramid.
        raise PyramidError(f"{exc} {SAVE_A_COPY}") from None
    check_existing_pyramid(image, options)
    try:
        plan = plan_pyramid(image, options)
    except PyramidError as exc:
        raise PyramidError(in_widget_words(exc)) from None
    if not plan.new_levels:
        raise PyramidError("1 level is level 0 alone: choose 2 or more levels to build a pyramid")
    check_writable(image)
    return plan
