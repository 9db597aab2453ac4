"""NGFF ``multiscales`` metadata for a pyramid: 0.4 (zarr v2) and 0.5 (zarr v3).

Only the first multiscales entry's ``datasets`` (and its ``type``/``metadata`` provenance) are
rewritten; axes, units, ``omero``, other multiscales entries and every other attribute are
carried over untouched from the document that was read.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from .._version import __version__
from .image import OmeZarrImage


def level_transforms(
    scale0: Sequence[float],
    translation0: Sequence[float],
    cumulative: Sequence[int],
    window: bool,
) -> tuple[list[float], list[float]]:
    """Scale and translation of a level coarsened by ``cumulative`` factors from level 0.

    A level-k pixel ``i`` covers level-0 pixels ``[i*F, (i+1)*F)``. When it summarises that
    whole ``window`` (every method but nearest), its centre is at level-0 pixel
    ``i*F + (F-1)/2``, hence the half-window translation; otherwise it is level-0 pixel
    ``i*F`` itself, and the origin stays.
    """
    scale = [s * f for s, f in zip(scale0, cumulative, strict=True)]
    if window:
        shift = [
            t + (f - 1) / 2 * s for t, s, f in zip(translation0, scale0, cumulative, strict=True)
        ]
    else:
        shift = list(translation0)
    return scale, shift


def dataset_entry(path: str, scale: Sequence[float], translation: Sequence[float]) -> dict:
    """One ``datasets`` entry; the translation is omitted when it is all zeros."""
    transforms: list[dict[str, Any]] = [{"type": "scale", "scale": [float(s) for s in scale]}]
    if any(translation):
        transforms.append({"type": "translation", "translation": [float(t) for t in translation]})
    return {"path": path, "coordinateTransformations": transforms}


def multiscale_with_levels(
    image: OmeZarrImage, datasets: Sequence[dict[str, Any]], provenance: dict[str, Any]
) -> dict[str, Any]:
    """The first multiscales entry with ``datasets`` replaced (level 0 kept verbatim)."""
    if image.has_multiscales:
        multiscale = copy.deepcopy(image.multiscale)
        level0 = copy.deepcopy(image.multiscale["datasets"][0])
    else:
        multiscale = image.format.new_multiscale(image.root.name, _axes_json(image))
        level0 = dataset_entry(image.level0.path, image.scale0, image.translation0)
    multiscale["datasets"] = [level0, *datasets[1:]]
    multiscale["type"] = provenance["method"]
    multiscale["metadata"] = {
        "description": "levels built by napari-pyramids in one pass over level 0",
        "method": "napari_pyramids.build_pyramid",
        "version": __version__,
        "kwargs": provenance,
    }
    return multiscale


def group_document_with(image: OmeZarrImage, multiscale: dict[str, Any]) -> dict[str, Any]:
    """The image's group metadata document with its first multiscales entry replaced."""
    return image.format.group_document_with(image.group_document, multiscale)


def _axes_json(image: OmeZarrImage) -> list[dict[str, Any]]:
    axes = []
    for axis in image.axes:
        entry: dict[str, Any] = {"name": axis.name}
        if axis.type:
            entry["type"] = axis.type
        if axis.unit:
            entry["unit"] = axis.unit
        axes.append(entry)
    return axes
