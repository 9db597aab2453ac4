"""What the Pyramid Builder widget asks for, checked with messages written for its controls.

The widget holds no logic of its own: it reads its controls into
:class:`~napari_pyramids.options.BuildOptions`, asks here for defaults, a plan or a refusal,
and shows the answer. The checks are those of
:func:`~napari_pyramids.pyramid.plan.plan_pyramid`, plus the refusals a person clicking
needs before a build starts (an image that already has the pyramid asked for, a read-only
image), phrased in terms of the widget's controls. Qt-free, so it is tested without a viewer.
"""

from __future__ import annotations

import os

from ..errors import PyramidError
from ..ome.image import OmeZarrImage
from ..options import BuildOptions
from ..pyramid.methods import default_method
from ..pyramid.plan import PyramidPlan, auto_num_levels, level_factors, plan_pyramid

SAVE_A_COPY = (
    "To keep a copy with its pyramid, select its layers and use File > Save Selected "
    "Layers... with the writer 'OME-Zarr with pyramid'."
)


def default_request(image: OmeZarrImage) -> BuildOptions:
    """Sensible starting values: levels down to about 256 px, mode for labels, level 0 chunks."""
    factors = level_factors(image, BuildOptions())
    return BuildOptions(
        num_levels=auto_num_levels(image, factors), method=default_method(image.is_label).name
    )


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
            f"{image.root.name} is already multiscale with the {existing} levels asked for; "
            "tick 'overwrite' to rebuild them, or choose another number of levels."
        )
    raise PyramidError(
        f"{image.root.name} already has {existing} levels; tick 'overwrite' to replace them "
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
    plan = plan_pyramid(image, options)
    if not plan.new_levels:
        raise PyramidError("1 level is level 0 alone: choose 2 or more levels to build a pyramid")
    check_writable(image)
    return plan
