"""What the Pyramid Builder widget asks for, checked with messages written for its controls.

The widget holds no logic of its own: it reads its controls into a :class:`BuildRequest`,
asks here for defaults, a plan or a refusal, and shows the answer. The checks are those of
:func:`~napari_pyramids.pyramid.plan.plan_pyramid`, plus the refusals a person clicking
needs before a build starts (an image that already has the pyramid asked for, a read-only
image), phrased in terms of the widget's controls.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from .errors import PyramidError
from .ome.image import OmeZarrImage
from .pyramid.plan import PyramidPlan, auto_num_levels, level_factors, plan_pyramid


@dataclass(frozen=True)
class BuildRequest:
    """The widget's parameters, as the library's keywords."""

    num_levels: int
    coarsening_xy: int = 2
    coarsening_z: int = 1
    method: str | None = None
    chunksize: tuple[int, ...] | None = None
    edge: str = "trim"
    overwrite: bool = False

    def build_params(self) -> dict[str, Any]:
        """Keywords of :func:`~napari_pyramids.engine.iter_build`."""
        return asdict(self)

    def preview_params(self) -> dict[str, Any]:
        """Keywords of :func:`~napari_pyramids.api.lazy_pyramid`."""
        params = asdict(self)
        del params["chunksize"], params["overwrite"]
        return params


def default_request(image: OmeZarrImage) -> BuildRequest:
    """Sensible starting values: levels down to about 256 px, mode for labels, level 0 chunks."""
    factors = level_factors(image, 2, 1)
    return BuildRequest(
        num_levels=auto_num_levels(image, factors),
        method="mode" if image.is_label else "mean",
    )


def parse_chunksize(text: str, image: OmeZarrImage) -> tuple[int, ...] | None:
    """``"1,1,512,512"`` -> a tuple; blank -> None (level 0's chunks)."""
    text = text.strip().strip("()[]")
    if not text:
        return None
    names = ", ".join(a.name for a in image.axes)
    try:
        values = tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise PyramidError(
            f"chunk shape {text!r} is not a list of integers: give one per axis ({names}), "
            "e.g. " + ",".join(str(c) for c in image.level0.chunks) + ", or leave it blank"
        ) from None
    if len(values) != image.ndim:
        raise PyramidError(
            f"chunk shape {text!r} has {len(values)} numbers but the image has {image.ndim} "
            f"axes ({names}); give one per axis or leave it blank for level 0's chunks"
        )
    return values


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


def check_existing_pyramid(image: OmeZarrImage, request: BuildRequest) -> None:
    """Refuse to rebuild levels the image already has unless 'overwrite' is ticked."""
    existing = len(image.level_paths) if image.has_multiscales else 1
    if existing < 2 or request.overwrite:
        return
    if existing == request.num_levels:
        raise PyramidError(
            f"{image.root.name} is already multiscale with the {existing} levels asked for; "
            "tick 'overwrite' to rebuild them, or choose another number of levels."
        )
    raise PyramidError(
        f"{image.root.name} already has {existing} levels; tick 'overwrite' to replace them "
        f"with {request.num_levels} levels."
    )


def plan_request(image: OmeZarrImage, request: BuildRequest, **engine: Any) -> PyramidPlan:
    """The plan of a build the widget would start, or the refusal it must show.

    ``engine`` passes ``memory_budget`` and ``workers`` through to the plan.

    Raises
    ------
    PyramidError
        With one sentence naming the problem and the control that fixes it.
    """
    check_existing_pyramid(image, request)
    plan = plan_pyramid(image, **request.build_params(), **engine)
    if not plan.new_levels:
        raise PyramidError("1 level is level 0 alone: choose 2 or more levels to build a pyramid")
    check_writable(image)
    return plan
