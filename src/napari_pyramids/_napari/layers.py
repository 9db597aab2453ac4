"""OME-Zarr images as napari layer data: plain ``(data, kwargs, layer_type)`` tuples, no napari.

The reader contribution, the sample data, the preview and the reload after a build all turn
an image into layers here, so every door shows an image the same way: one layer per channel
(names, colours, contrast and visibility from ``omero``), the NGFF scale and translation, a
multiscale list of lazy dask levels, and the image group's path in ``metadata`` so the
widget can find the image again whatever reader or sample opened it.

Display hints in ``omero`` are transitional metadata: a malformed entry is ignored (the
image still opens), while a malformed structure (levels, axes, paths) is refused by
:func:`~napari_pyramids.ome.image.open_image` with one clear error.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dask.array as da

from ..datasets import place_name
from ..errors import PyramidError
from ..images import open_image
from ..ome.image import OmeZarrImage, read_array_info
from ..storage import UrlPath, open_level
from ..untrusted import check_level_path, finite_number

LayerData = tuple[Any, dict[str, Any], str]

# Keys of ``layer.metadata`` written by napari-pyramids.
PATH_KEY = "napari_pyramids_path"
CHANNEL_KEY = "napari_pyramids_channel"
PREVIEW_KEY = "napari_pyramids_preview"
EDIT_KEY = "napari_pyramids_edit"  # a layer made for painting level 0 (editing.py)

# The units NGFF allows on space and time axes; anything else is not passed to napari,
# which would refuse a unit it cannot parse.
NGFF_UNITS = frozenset({
    "angstrom", "attometer", "centimeter", "decimeter", "exameter", "femtometer", "foot",
    "gigameter", "hectometer", "inch", "kilometer", "megameter", "meter", "micrometer", "mile",
    "millimeter", "nanometer", "parsec", "petameter", "picometer", "terameter", "yard",
    "yoctometer", "yottameter", "zeptometer", "zettameter", "attosecond", "centisecond", "day",
    "decisecond", "exasecond", "femtosecond", "gigasecond", "hectosecond", "hour",
    "kilosecond", "megasecond", "microsecond", "millisecond", "minute", "nanosecond",
    "petasecond", "picosecond", "second", "terasecond", "yoctosecond", "yottasecond",
    "zeptosecond", "zettasecond",
})  # fmt: skip
# Colours for channels that name none: napari's own choice for two channels, then a cycle.
_TWO_CHANNELS = ("magenta", "green")
_CHANNEL_CYCLE = ("cyan", "yellow", "magenta", "red", "green", "blue")
_HEX_COLOUR = re.compile(r"^[0-9A-Fa-f]{6}$")
# Names from the metadata are cut here: a layer list has no use for a megabyte of name.
MAX_NAME = 200


def layer_data(path: str | os.PathLike[str]) -> list[LayerData]:
    """The napari layers of an OME-Zarr image group: its channels, then its ``labels/``.

    Parameters
    ----------
    path
        An image group (zarr v2 / NGFF 0.4 or zarr v3 / NGFF 0.5), or a label image.

    Returns
    -------
    list of (data, kwargs, layer_type)
        ``data`` is a list of dask arrays (one per level) when the image has several levels,
        else the level-0 dask array. ``kwargs['metadata']`` holds the group's path under
        :data:`PATH_KEY` and the channel index under :data:`CHANNEL_KEY`.

    Raises
    ------
    PyramidError
        If the image's metadata or levels are malformed (a malformed label image inside
        an image is skipped with a warning instead).
    """
    image = open_image(path)
    levels = open_levels(image)
    if image.is_label:
        return [labels_layer(image, levels)]
    layers = image_layers(image, levels)
    for label_root in label_image_paths(image):
        try:
            label = open_image(label_root)
            layers.append(labels_layer(label, open_levels(label)))
        except PyramidError as exc:
            warnings.warn(f"label image skipped: {exc}", stacklevel=2)
    return layers


def open_levels(image: OmeZarrImage) -> list[da.Array]:
    """Every level the metadata lists, as read-only dask arrays, checked against level 0."""
    levels = []
    for rel in image.level_paths:
        info = read_array_info(image.store, rel, image.zarr_format)
        if len(info.shape) != image.ndim:
            raise PyramidError(
                f"{image.root}: level {rel!r} has {len(info.shape)} dimensions but level 0 has "
                f"{image.ndim}; every level of a pyramid has the same axes. Fix the metadata."
            )
        levels.append(open_level(image, rel))
    return levels


def channel_axis(image: OmeZarrImage) -> int | None:
    """Index of the channel axis (by type, else by the name 'c'), or None."""
    for i, axis in enumerate(image.axes):
        if axis.type == "channel":
            return i
    for i, axis in enumerate(image.axes):
        if axis.type is None and axis.name.lower() == "c":
            return i
    return None


def image_layers(image: OmeZarrImage, levels: Sequence[da.Array]) -> list[LayerData]:
    """One image layer per channel of ``levels`` (stored or lazy), dressed from the metadata."""
    c = channel_axis(image)
    channels = _omero_channels(image)
    count = image.level0.shape[c] if c is not None else 1
    place = place_name(image)
    # In a plate every field has the same channel names: its place tells the layers apart.
    in_plate = "/" in place
    name = place[:MAX_NAME] if in_plate else display_name(image)
    layers = []
    for i in range(count):
        data = [_take(level, c, i) for level in levels]
        kwargs = _spatial_kwargs(image, drop=c)
        hints = channels[i] if i < len(channels) else {}
        channel = hints.get("label") or (f"c{i}" if c is not None else None)
        if channel is None:
            kwargs["name"] = name
        elif in_plate or "label" not in hints:
            kwargs["name"] = f"{name} {channel}"
        else:
            kwargs["name"] = channel
        if "color" in hints:
            kwargs["colormap"] = "#" + hints["color"].lower()
        elif count == 2:
            kwargs["colormap"] = _TWO_CHANNELS[i]
        elif count > 2:
            kwargs["colormap"] = _CHANNEL_CYCLE[i % len(_CHANNEL_CYCLE)]
        if "window" in hints:
            kwargs["contrast_limits"] = list(hints["window"])
        if "active" in hints:
            kwargs["visible"] = hints["active"]
        if count > 1:
            kwargs["blending"] = "translucent_no_depth" if i == 0 else "additive"
        kwargs["metadata"] = {PATH_KEY: str(image.root), CHANNEL_KEY: i if c is not None else None}
        layers.append(_with_levels(data, kwargs, "image"))
    return layers


def labels_layer(image: OmeZarrImage, levels: Sequence[da.Array]) -> LayerData:
    """A label image as one Labels layer (an image layer if its dtype is not integer)."""
    c = channel_axis(image)
    squeeze = c is not None and image.level0.shape[c] == 1
    data = [_take(level, c, 0) if squeeze else level for level in levels]
    kwargs = _spatial_kwargs(image, drop=c if squeeze else None)
    kwargs["name"] = display_name(image)
    kwargs["metadata"] = {PATH_KEY: str(image.root), CHANNEL_KEY: None}
    kind = "labels" if image.level0.dtype.kind in "iu" else "image"
    return _with_levels(data, kwargs, kind)


def display_name(image: OmeZarrImage) -> str:
    """Its place for a field of a plate (``plate.zarr/A/1/0``); else the multiscale's name if
    it is a non-empty string, else the folder name.

    The name is cut at :data:`MAX_NAME` characters, like a channel's label.
    """
    place = place_name(image)
    if "/" in place:  # folder names hold no slash: only a place in a plate does
        return place[:MAX_NAME]
    name = image.multiscale.get("name")
    if isinstance(name, str) and name.strip():
        return name.strip()[:MAX_NAME]
    folder = image.root.name
    for suffix in (".ome.zarr", ".zarr"):
        if folder.endswith(suffix) and len(folder) > len(suffix):
            return folder[: -len(suffix)]
    return folder


def label_image_paths(image: OmeZarrImage) -> list[Path | UrlPath]:
    """The label images listed by the image's ``labels`` group (NGFF ``labels`` list), safe
    names only; paths, or URLs for an image in an object store."""
    folder = image.root / "labels"
    names: Any = None
    for doc_name in ("zarr.json", ".zattrs"):
        try:
            doc = image.store.read_json(f"labels/{doc_name}", "labels group metadata")
        except PyramidError as exc:
            warnings.warn(f"labels skipped: {exc}", stacklevel=3)
            return []
        if isinstance(doc, dict):
            attrs = doc.get("attributes", {}) if doc_name == "zarr.json" else doc
            ome = attrs.get("ome", attrs) if isinstance(attrs, dict) else {}
            names = ome.get("labels") if isinstance(ome, dict) else None
            break
    if not isinstance(names, list):
        return []
    paths = []
    for name in names:
        try:
            paths.append(folder / check_level_path(name, f"{folder}: labels entry"))
        except PyramidError as exc:
            warnings.warn(f"label image skipped: {exc}", stacklevel=3)
    return paths


def image_path_of(
    metadata: Mapping[str, Any], source_path: str | None, is_labels: bool, name: str = ""
) -> Path:
    """The OME-Zarr group a napari layer shows, from our metadata or the layer's source path.

    A Labels layer opened by another reader from an image (source path = the image) is
    matched to the label image of the same name under ``labels/``.

    Raises
    ------
    PyramidError
        Saying why the layer is not an OME-Zarr image on disk.
    """
    recorded = metadata.get(PATH_KEY) if isinstance(metadata, Mapping) else None
    if isinstance(recorded, str):
        return open_image(recorded).root
    if not source_path:
        raise PyramidError("not read from a file")
    if os.path.isfile(source_path):
        # A TIFF, say: OME-Zarr images are folders, so nothing more to say than that.
        raise PyramidError(f"read from {Path(source_path).name}, a file, not OME-Zarr")
    image = open_image(source_path)
    if is_labels and not image.is_label:
        wanted = name.rstrip("/").split("/")[-1]
        for label_root in label_image_paths(image):
            if label_root.name == wanted:
                return open_image(label_root).root
        raise PyramidError(f"a labels layer whose label image in {image.root} is unknown")
    return image.root


def _take(level: da.Array, axis: int | None, index: int) -> da.Array:
    if axis is None:
        return level
    return level[(slice(None),) * axis + (index,)]


def _drop(values: Sequence[Any], axis: int | None) -> list[Any]:
    return [v for i, v in enumerate(values) if i != axis]


def _spatial_kwargs(image: OmeZarrImage, drop: int | None) -> dict[str, Any]:
    axes = _drop(image.axes, drop)
    kwargs: dict[str, Any] = {
        "scale": _drop(image.scale0, drop),
        "translate": _drop(image.translation0, drop),
        "axis_labels": [axis.name for axis in axes],
    }
    units = [axis.unit if axis.unit in NGFF_UNITS else None for axis in axes]
    if any(units):
        kwargs["units"] = [u or "pixel" for u in units]
    return kwargs


def _with_levels(data: list[da.Array], kwargs: dict[str, Any], kind: str) -> LayerData:
    kwargs["multiscale"] = len(data) > 1
    return (data if len(data) > 1 else data[0], kwargs, kind)


def _omero_channels(image: OmeZarrImage) -> list[dict[str, Any]]:
    """The usable display hints of each ``omero.channels`` entry; bad entries give nothing."""
    omero = image.ome_attributes.get("omero")
    channels = omero.get("channels") if isinstance(omero, dict) else None
    if not isinstance(channels, list):
        return []
    hints = []
    for entry in channels:
        hint: dict[str, Any] = {}
        if isinstance(entry, dict):
            label = entry.get("label")
            if isinstance(label, str) and label.strip():
                hint["label"] = label.strip()[:MAX_NAME]
            color = entry.get("color")
            if isinstance(color, str) and _HEX_COLOUR.match(color):
                hint["color"] = color
            if isinstance(entry.get("active"), bool):
                hint["active"] = entry["active"]
            window = entry.get("window")
            if isinstance(window, dict):
                start, end = window.get("start"), window.get("end")
                if finite_number(start) and finite_number(end) and start < end:
                    hint["window"] = (float(start), float(end))
        hints.append(hint)
    return hints
