"""The napari writer contributions: layers as a new OME-Zarr image with its pyramid.

Thin over :func:`napari_pyramids.newimage.write_new_image`. What the user sees is kept: each
image layer's name, colour, contrast window and visibility become the image's NGFF ``omero``
channel metadata. Several image layers of one image (same shape) are saved as the channels
of one image; labels layers selected with them become its label images.

napari turns a writer's ``ValueError`` into its own "not a valid writer" message and drops
ours, so a refusal is raised as :class:`SaveRefused`, which napari shows as it is.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import dask.array as da
import numpy as np

from ..errors import PyramidError, visible_text
from ..newimage import ChannelDisplay, write_new_image
from .layers import NGFF_UNITS

FullLayerData = tuple[Any, dict[str, Any], str]


class SaveRefused(Exception):  # noqa: N818 - what the user is told, not a bug
    """The layers were not saved; the message says why and what to do. Nothing was written.

    Deliberately not a ValueError: napari (npe2) catches ValueError from a writer and shows
    only "Given plugin ... is not a valid writer". Its ``message`` is what napari's
    notification shows.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = visible_text(" ".join(message.split("\n")))


def write_images(path: str, layer_data: list[FullLayerData]) -> list[str]:
    """Save one image layer, or several of one image as its channels, as NGFF 0.4 + pyramid."""
    return _refusing(_write_images, path, layer_data, zarr_format=2)


def write_images_v3(path: str, layer_data: list[FullLayerData]) -> list[str]:
    """As :func:`write_images`, in zarr v3 / NGFF 0.5."""
    return _refusing(_write_images, path, layer_data, zarr_format=3)


def write_layers(path: str, layer_data: list[FullLayerData]) -> list[str]:
    """Save image layers (the channels of one image) with labels layers as its label images
    (``labels/<name>``, as many levels as the image), NGFF 0.4."""
    return _refusing(_write_with_labels, path, layer_data, zarr_format=2)


def write_layers_v3(path: str, layer_data: list[FullLayerData]) -> list[str]:
    """As :func:`write_layers`, in zarr v3 / NGFF 0.5."""
    return _refusing(_write_with_labels, path, layer_data, zarr_format=3)


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Save a labels layer as an NGFF 0.4 label image and build its pyramid (mode)."""
    return _refusing(_write, path, _level0(data), meta, labels=True, channels=None, zarr_format=2)


def _refusing(write: Callable[..., str], *args: Any, **kwargs: Any) -> list[str]:
    """``[write(...)]``, with our refusal raised as :class:`SaveRefused`."""
    try:
        return [write(*args, **kwargs)]
    except PyramidError as exc:
        message = str(exc)
    # Raised outside the except block: no chained traceback keeps napari's frames alive.
    raise SaveRefused(message)


def _write_with_labels(path: str, layer_data: Sequence[FullLayerData], zarr_format: int) -> str:
    images, label_images = _split(layer_data)
    return _write_images(path, images, label_images, zarr_format=zarr_format)


def _split(
    layer_data: Sequence[FullLayerData],
) -> tuple[list[FullLayerData], list[tuple[str, Any]]]:
    """The image layers, and the labels layers as ``(name, level 0)`` of label images."""
    images = [entry for entry in layer_data if entry[2] == "image"]
    labels = [entry for entry in layer_data if entry[2] == "labels"]
    others = sorted({kind for _, _, kind in layer_data} - {"image", "labels"})
    if others or not images:
        raise PyramidError(
            f"an OME-Zarr image holds image layers and their labels, not {', '.join(others)} "
            "layers; select only image and labels layers. Nothing was written."
            if others
            else "select at least one image layer to save labels with it. Nothing was written."
        )
    scale = tuple(images[0][1].get("scale") or ())
    for _, meta, _ in labels:
        if tuple(meta.get("scale") or ()) != scale:
            raise PyramidError(
                f"the labels {meta.get('name')!r} have other pixel sizes (scale) than the "
                "image; label images share their image's pixels. Nothing was written."
            )
    return images, [(str(meta.get("name") or "labels"), _level0(d)) for d, meta, _ in labels]


def _write_images(
    path: str,
    layer_data: Sequence[FullLayerData],
    label_images: Sequence[tuple[str, Any]] = (),
    *,
    zarr_format: int,
) -> str:
    if len(layer_data) == 1:
        data, meta, _ = layer_data[0]
        channels = None if meta.get("rgb") else [channel_display(meta)]
        data = _level0(data)
    else:
        data, meta = _stack_channels(layer_data)
        channels = [channel_display(m) for _, m, _ in layer_data]
    return _write(
        path,
        data,
        meta,
        labels=False,
        channels=channels,
        zarr_format=zarr_format,
        label_images=label_images,
    )


def _stack_channels(layer_data: Sequence[FullLayerData]) -> tuple[Any, dict[str, Any]]:
    """The layers as the channels of one image: a new channel axis after time, if any."""
    first = layer_data[0][1]
    names = [str(meta.get("name", "?")) for _, meta, _ in layer_data]
    if any(meta.get("rgb") for _, meta, _ in layer_data):
        raise PyramidError(
            "an RGB layer cannot be a channel of another image; save it on its own "
            "(select only it). Nothing was written."
        )
    arrays = [_level0(data) for data, _, _ in layer_data]
    shapes = {tuple(a.shape) for a in arrays}
    if len(shapes) > 1:
        listed = ", ".join(
            f"{n!r} {'×'.join(map(str, a.shape))}" for n, a in zip(names, arrays, strict=True)
        )
        raise PyramidError(
            f"the selected layers have different shapes ({listed}); select layers of one "
            "image (same shape) to save them as its channels, or save each on its own. "
            "Nothing was written."
        )
    dtypes = {np.dtype(a.dtype) for a in arrays}
    if len(dtypes) > 1:
        raise PyramidError(
            f"the selected layers hold different types ({', '.join(sorted(map(str, dtypes)))}); "
            "the channels of one image share one type. Nothing was written."
        )
    for key in ("scale", "translate"):
        values = {tuple(meta.get(key) or ()) for _, meta, _ in layer_data}
        if len(values) > 1:
            what = "pixel sizes (scale)" if key == "scale" else "positions (translate)"
            raise PyramidError(
                f"the selected layers have different {what}; select layers of one image to "
                "save them as its channels, or save each on its own. Nothing was written."
            )
    ndim = arrays[0].ndim
    axes = _axis_names(first.get("axis_labels"), ndim) or list("tzyx"[-ndim:])
    at = 1 if axes[0] == "t" else 0
    stacked = da.stack([da.asarray(a) for a in arrays], axis=at)
    meta = dict(first)
    meta["axis_labels"] = [*axes[:at], "c", *axes[at:]]
    meta["scale"] = _insert(first.get("scale"), ndim, at, 1.0)
    meta["translate"] = _insert(first.get("translate"), ndim, at, 0.0)
    meta["units"] = None if not first.get("units") else [*first["units"]]
    meta["name"] = _common_name(names)
    return stacked, meta


def _insert(values: Any, ndim: int, at: int, filler: float) -> list[float]:
    values = list(values) if values is not None and len(values) == ndim else [filler] * ndim
    return [*values[:at], filler, *values[at:]]


def _common_name(names: Sequence[str]) -> str | None:
    """The image name the layers share (``sample c0``, ``sample c1`` -> ``sample``), if any."""
    prefix = names[0]
    for name in names[1:]:
        while not name.startswith(prefix):
            prefix = prefix[:-1]
    # Our reader names channels "<image> c<i>".
    prefix = re.sub(r"(\s+c)?[\s_:-]*$", "", prefix)
    return prefix or None


def channel_display(meta: dict[str, Any]) -> ChannelDisplay:
    """What napari shows of an image layer, as OME-Zarr channel metadata."""
    window = meta.get("contrast_limits")
    return ChannelDisplay(
        label=str(meta.get("name") or "channel"),
        color=_colour_hex(meta.get("colormap")),
        window=(float(window[0]), float(window[1])) if window is not None else None,
        active=bool(meta.get("visible", True)),
    )


def _colour_hex(colormap: Any) -> str:
    """The colour a colormap reaches at the top of the contrast window, as six hex digits."""
    colors = colormap.get("colors") if isinstance(colormap, dict) else None
    if colors is None or len(colors) == 0:
        return "FFFFFF"
    top = np.clip(np.asarray(colors, dtype=float)[-1][:3], 0.0, 1.0)
    return "".join(f"{round(c * 255):02X}" for c in top)


def _level0(data: Any) -> Any:
    return data[0] if isinstance(data, list | tuple) else data


def _write(
    path: str,
    data: Any,
    meta: dict[str, Any],
    labels: bool,
    channels: list[ChannelDisplay] | None,
    zarr_format: int,
    label_images: Sequence[tuple[str, Any]] = (),
) -> str:
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
        channels=channels,
        zarr_format=zarr_format,
        label_images=label_images,
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
