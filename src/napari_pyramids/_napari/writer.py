"""The napari writer contribution: an image or labels layer as a new OME-Zarr with its pyramid.

Thin over :func:`napari_pyramids.newimage.write_new_image`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..newimage import write_new_image
from .layers import NGFF_UNITS


def write_image(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Save an image layer (RGB as a channel axis) as NGFF 0.4 and build its pyramid."""
    return [_write(path, data, meta, labels=False)]


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Save a labels layer as an NGFF 0.4 label image and build its pyramid (mode)."""
    return [_write(path, data, meta, labels=True)]


def _write(path: str, data: Any, meta: dict[str, Any], labels: bool) -> str:
    if isinstance(data, list | tuple):
        data = data[0]
    scale = list(meta.get("scale") or [1.0] * data.ndim)
    translate = list(meta.get("translate") or [0.0] * data.ndim)
    rgb = bool(meta.get("rgb"))
    # napari's axis labels (and scale) leave out the colour axis of an RGB layer.
    axes = _axis_names(meta.get("axis_labels"), data.ndim - rgb)
    if rgb:
        # RGB(A) in napari is a trailing axis; OME-Zarr keeps colour as a channel axis, after
        # time and before the space axes (t, c, z, y, x).
        names = axes or list("tzyx"[-(data.ndim - 1) :])
        at = 1 if names[0] == "t" else 0
        data = np.moveaxis(np.asarray(data), -1, at)
        axes = [*names[:at], "c", *names[at:]]
        scale = [*scale[:at], 1.0, *scale[at:]]
        translate = [*translate[:at], 0.0, *translate[at:]]
    root = write_new_image(
        path,
        data,
        axes=axes,
        scale=scale,
        translation=translate,
        name=meta.get("name"),
        labels=labels,
        unit=_space_unit(meta.get("units")),
    )
    return str(root)


def _axis_names(labels: Any, ndim: int) -> list[str] | None:
    """napari's axis labels if they are NGFF axis names, else None (guessed from ndim)."""
    if not labels or len(labels) != ndim:
        return None
    names = [str(label).lower() for label in labels]
    return names if set(names) <= set("tczyx") and len(set(names)) == ndim else None


def _space_unit(units: Any) -> str | None:
    if not units:
        return None
    unit = str(units[-1])
    return unit if unit in NGFF_UNITS else None
