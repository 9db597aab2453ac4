"""What the Pyramid Builder says: every line of its labels and status, as plain text.

Qt-free and napari-free, so the wording is read and tested without a viewer. Names that
come from an image (layer names, paths, level names, errors) are passed through as they
are; the widget shows them in plain-text labels through
:func:`~napari_pyramids.errors.visible_text`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..datasets import place_name
from ..errors import (
    LabelMethodError,
    LevelExistsError,
    MemoryBudgetError,
    NoZAxisError,
    PyramidError,
    TooManyLevelsError,
    format_bytes,
    visible_text,
)
from ..estimate import disk_estimate
from ..ome.image import OmeZarrImage, read_array_info

if TYPE_CHECKING:
    from ..engine import Progress
    from ..pyramid.plan import PyramidPlan

NO_LAYER = (
    "No layer from an OME-Zarr image on disk is loaded: open one with File > Open "
    "(reader napari-pyramids) or load File > Open Sample > napari-pyramids."
)
READY = "Ready: Preview shows the pyramid without writing anything."
BUSY = "A build is already running; wait for it or cancel it."
CANCELLING = "Cancelling… the image will be left as it was."
CANCELLED = "Cancelled; the image is unchanged."
PUBLISHING = "Publishing the new levels…"
SEE_SUMMARY = "Nothing built: the summary above says why and how to build."
# The layers the picker leaves out are named, up to this many.
UNLISTED_SHOWN = 5
SAVE_AS_OME_ZARR = (
    "An image or labels layer that is not from OME-Zarr (a TIFF, say) gets its pyramid by "
    "being saved as OME-Zarr: select it, then File > Save Selected Layers... with the "
    "writer 'OME-Zarr with pyramid'."
)


def listing_note(listed: bool, unlisted: Sequence[tuple[str, str]]) -> str:
    """Why the picker is empty, and which layers it leaves out: (name, reason) pairs."""
    notes = [] if listed else [NO_LAYER]
    if unlisted:
        named = "; ".join(f"{name!r} ({reason})" for name, reason in unlisted[:UNLISTED_SHOWN])
        extra = len(unlisted) - UNLISTED_SHOWN
        more = f"; and {extra} more" if extra > 0 else ""
        notes.append("Not listed, not from an OME-Zarr image on disk: " + named + more)
        notes.append(SAVE_AS_OME_ZARR)
    return "\n".join(notes)


def in_widget_words(exc: PyramidError) -> str:
    """A refusal with its fix in terms of the widget's controls, not of the API or the CLI."""
    if isinstance(exc, TooManyLevelsError):
        return f"{exc.problem}: choose at most {exc.most} levels, or a smaller factor."
    if isinstance(exc, NoZAxisError):
        return f"{exc.problem}: set 'factor Z' to 1."
    if isinstance(exc, LabelMethodError):
        return f"{exc.problem} Choose the method 'mode' (the default for labels) or 'nearest'."
    if isinstance(exc, LevelExistsError):
        return f"{exc.problem}; tick 'overwrite' to replace the existing levels."
    if isinstance(exc, MemoryBudgetError):
        return f"{exc.problem} Type a smaller chunk shape in 'chunks'."
    return str(exc)


def describe_on_disk(image: OmeZarrImage) -> str:
    """The picked image in a few plain lines: where, what, and the levels it has."""
    level0 = image.level0
    shape = "×".join(str(n) for n in level0.shape)
    names = [visible_text(a.name) for a in image.axes]
    axes = "".join(names) if all(len(n) == 1 for n in names) else ",".join(names)
    kind = "labels" if image.is_label else "image"
    sizes = []
    for path in image.level_paths:
        try:
            info = read_array_info(image.store, path, image.zarr_format)
            sizes.append("×".join(str(info.shape[i]) for i in image.yx_axes))
        except PyramidError:
            sizes.append("missing")
    return (
        f"{visible_text(str(image.root))}\n{kind}: {axes} {shape} {level0.dtype}, "
        f"zarr v{image.zarr_format} / NGFF {image.ngff_version}\n"
        f"on disk: {len(sizes)} level(s) ({', '.join(sizes)})"
    )


def describe_plan(plan: PyramidPlan, ratio: float | None, images: int = 1) -> str:
    """Each planned level's shape, then the disk space the new levels need and the free space.

    ``ratio`` is level 0's stored/raw size (None if unknown: counted as uncompressed).
    ``images`` the build covers, each counted like this one (a plate's fields are alike).
    """
    lines = []
    for level in plan.levels:
        shape = "×".join(str(n) for n in level.shape)
        lines.append(f"level {level.index} ({level.path}): {shape}")
    three_d = three_d_text(plan)
    if three_d:
        lines.append(three_d)
    estimate = disk_estimate(plan, ratio if ratio is not None else 1.0)
    ratio_text = f"level 0 stores 1:{1 / ratio:.1f}" if ratio else "uncompressed"
    needed = estimate.stored_bytes * images
    if images > 1:
        text = (
            f"needs ~{format_bytes(needed)} on disk for the {images} images if alike "
            f"(~{format_bytes(estimate.stored_bytes)} for this one; {ratio_text})"
        )
    else:
        text = f"needs ~{format_bytes(needed)} on disk ({ratio_text})"
    if estimate.free_bytes is not None:
        text += f", {format_bytes(estimate.free_bytes)} free"
        if needed > estimate.free_bytes:
            text += " - NOT ENOUGH SPACE"
    lines.append(text)
    return "\n".join(lines)


def three_d_text(plan: PyramidPlan) -> str | None:
    """What napari's 3D view will draw (the coarsest level), for an image with a Z axis."""
    image = plan.image
    z = image.z_axis
    if z is None or len(plan.levels) < 2:
        return None
    y, x = image.yx_axes
    coarsest = plan.levels[-1]
    shape = "×".join(str(coarsest.shape[i]) for i in (z, y, x))
    voxel = "×".join(f"{coarsest.scale[i]:g}" for i in (z, y, x))
    unit = image.axes[x].unit
    unit_text = f" {visible_text(unit)}" if isinstance(unit, str) and unit else ""
    factor_z = coarsest.cumulative[z] // plan.levels[-2].cumulative[z]
    z_text = "Z kept" if factor_z == 1 else f"Z ÷{factor_z} per level"
    return (
        f"3D view: level {coarsest.index}, {shape} (Z×Y×X), voxels {voxel}{unit_text} ({z_text})"
    )


def nothing_to_build(reason: str) -> str:
    """The summary when the controls ask for no valid pyramid."""
    return f"Nothing to build as set: {reason}"


def preview_text(levels: Sequence[Any]) -> str:
    """The status while a preview of ``levels`` (arrays, Y and X last) is on show."""
    shapes = ", ".join("×".join(map(str, level.shape[-2:])) for level in levels)
    return (
        f"Preview of {len(levels)} levels ({shapes}); nothing is written. Delete the "
        "preview layer to see the source again."
    )


def building_text(plan: PyramidPlan, root: Path) -> str:
    """The status as a build starts."""
    return f"Building {len(plan.new_levels)} levels of {place_name(plan.image)}…"


def progress_text(step: Progress, cancelling: bool) -> str | None:
    """The status for a build's progress step; None keeps the status as it is."""
    if step.phase == "writing":
        if cancelling:
            return None
        percent = int(100 * (step.done + step.part) / step.total) if step.total else 0
        return f"Writing the new levels: {percent} % done"
    if step.phase == "publishing":
        return PUBLISHING
    return None


def built_text(plan: PyramidPlan, root: Path, cancel_too_late: bool) -> str:
    """The status once a build published its levels."""
    late = " (the cancel came too late)" if cancel_too_late else ""
    return f"Built {len(plan.levels)} levels of {place_name(plan.image)}{late}."


def preview_failed_text(exc: BaseException) -> str:
    """The status when the preview's levels could not be computed."""
    return f"Preview failed: {failure_reason(exc)}"


def failure_reason(exc: BaseException) -> str:
    """Why a build failed: our own message, or the exception's type and message."""
    if isinstance(exc, PyramidError):
        return in_widget_words(exc)
    return f"{type(exc).__name__}: {exc}"
