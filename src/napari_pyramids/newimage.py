"""Save an in-memory image or label array as a new OME-Zarr image, then build its pyramid.

Behind the napari writer contribution: a layer opened from a TIFF (or computed) becomes a
NGFF 0.4 image (zarr v2, read by every OME-Zarr tool; or zarr v3 / NGFF 0.5 on request) whose
lower levels are then built by the same engine as everything else. How each channel is shown
(name, colour, contrast window, visibility) is kept as NGFF ``omero`` metadata, which
OME-Zarr viewers read back.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from .engine import iter_build, run_build
from .errors import PyramidError
from .ome.format import FORMATS
from .ome.image import _AXIS_TYPES, default_axes
from .options import AUTO, BuildOptions

# Chunks of 512 px in Y and X and one plane deep read fast in napari at every zoom.
_PLANE_CHUNK = 512


@dataclass(frozen=True)
class ChannelDisplay:
    """How one channel is shown: NGFF ``omero.channels[i]``.

    Attributes
    ----------
    label
        The channel's name.
    color
        Six hex digits, ``"00FFFF"`` for cyan.
    window
        The contrast limits (start, end).
    limits
        The range the contrast may take (min, max); the dtype's range when None.
    active
        Whether the channel is shown.
    """

    label: str
    color: str = "FFFFFF"
    window: tuple[float, float] | None = None
    limits: tuple[float, float] | None = None
    active: bool = True


def write_new_image(
    path: str | os.PathLike[str],
    data: Any,
    *,
    axes: Sequence[str] | None = None,
    scale: Sequence[float] | None = None,
    translation: Sequence[float] | None = None,
    name: str | None = None,
    labels: bool = False,
    unit: str | None = None,
    channels: Sequence[ChannelDisplay] | None = None,
    zarr_format: int = 2,
    label_images: Sequence[tuple[str, Any]] = (),
) -> Path:
    """Write ``data`` as level 0 of a new OME-Zarr image and build its pyramid.

    Parameters
    ----------
    path
        The new image group; it must not exist.
    data
        A 2D to 5D array (numpy, dask or anything ``numpy.asarray`` accepts), or a list of
        levels of which the first is used.
    axes
        Axis names among t, c, z, y, x; default by dimension count (yx, zyx, czyx, tczyx).
    scale, translation
        Physical size and origin of a level-0 pixel along each axis.
    name
        The multiscale's name.
    labels
        Write a label image (``image-label`` metadata; the pyramid uses mode).
    unit
        Unit of the space axes (e.g. ``"micrometer"``).
    channels
        How each channel is shown (one entry per channel, or one for an image without a
        channel axis), written as NGFF ``omero`` metadata.
    zarr_format
        2 for zarr v2 / NGFF 0.4, 3 for zarr v3 / NGFF 0.5.
    label_images
        ``(name, array)`` pairs saved as the image's label images (``labels/<name>``), each
        the image's shape without its channel axis, with as many levels as the image.

    Returns
    -------
    Path
        The image group. On any error nothing is left at ``path``.
    """
    if isinstance(data, list | tuple):
        if not data:
            raise PyramidError("nothing to save: the layer has no data")
        data = data[0]
    ndim = len(getattr(data, "shape", ()))
    if not 2 <= ndim <= 5:
        raise PyramidError(
            f"a {ndim}D layer cannot be saved as OME-Zarr, which holds 2D to 5D images "
            "(t, c, z, y, x)"
        )
    names = _axis_names(axes, ndim)
    if zarr_format not in FORMATS:
        raise PyramidError(
            f"zarr_format must be 2 (NGFF 0.4) or 3 (NGFF 0.5), not {zarr_format!r}"
        )
    scale = _per_axis(scale, ndim, 1.0, "scale")
    translation = _per_axis(translation, ndim, 0.0, "translation")
    target = Path(path).expanduser().absolute()
    if os.path.lexists(target):
        raise PyramidError(f"{target} already exists; choose a new name. Nothing was written.")
    # Not ``getattr(data, "dtype", np.asarray(data).dtype)``: its default would load a whole
    # dask layer into memory before the plane-by-plane write.
    dtype = np.dtype(data.dtype) if hasattr(data, "dtype") else np.asarray(data).dtype
    if dtype.kind not in "biuf":
        raise PyramidError(f"a {dtype} layer cannot be saved; OME-Zarr holds numbers")
    omero = _omero(channels, names, data.shape, dtype)
    label_arrays = _label_arrays(label_images, names, data.shape)
    try:
        _write_level0(
            target, data, dtype, names, scale, translation, name, labels, unit, omero, zarr_format
        )
        if label_arrays:
            space = [i for i, axis in enumerate(names) if axis != "c"]
            _write_label_images(
                target,
                label_arrays,
                [names[i] for i in space],
                [scale[i] for i in space],
                [translation[i] for i in space],
                unit,
                zarr_format,
            )
        _build_new(target, with_labels=bool(label_arrays))
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(target)
        raise
    return target


def _build_new(target: Path, with_labels: bool) -> None:
    """Levels down to about 256 px; labels (from the metadata just written) use mode, and
    label images get as many levels as their image."""
    options = BuildOptions(num_levels=AUTO)
    if not with_labels:
        run_build(iter_build(target, options))
        return
    from .dataset_build import build_dataset

    report = build_dataset(target, options, images_at_once=1)
    if not report.ok:
        raise PyramidError(f"the pyramid of {target.name} could not be built:\n{report.table()}")


def _label_arrays(
    label_images: Sequence[tuple[str, Any]], names: Sequence[str], shape: Sequence[int]
) -> list[tuple[str, str, Any]]:
    """``(folder, name, level 0)`` of each label image, checked before anything is written."""
    expected = tuple(int(n) for axis, n in zip(names, shape, strict=True) if axis != "c")
    checked: list[tuple[str, str, Any]] = []
    folders: set[str] = set()
    for name, data in label_images:
        array = data[0] if isinstance(data, list | tuple) else data
        got = tuple(int(n) for n in getattr(array, "shape", ()))
        if got != expected:
            raise PyramidError(
                f"the labels {name!r} are {'×'.join(map(str, got))} but the image is "
                f"{'×'.join(map(str, expected))} (without channels); label images have the "
                "shape of their image. Select labels of this image, or save them on their "
                "own. Nothing was written."
            )
        if np.dtype(array.dtype).kind not in "iub":
            raise PyramidError(
                f"the labels {name!r} hold {array.dtype} values; label images hold integers. "
                "Nothing was written."
            )
        folder = _folder_name(name, folders)
        folders.add(folder)
        checked.append((folder, name, array))
    return checked


def _folder_name(name: str, taken: set[str]) -> str:
    """A folder name for a label image: letters, digits, '.', '_' and '-' only, unique."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "labels"
    folder, n = base, 1
    while folder in taken:
        n += 1
        folder = f"{base}_{n}"
    return folder


def _write_label_images(
    target: Path,
    label_arrays: Sequence[tuple[str, str, Any]],
    names: list[str],
    scale: list[float],
    translation: list[float],
    unit: str | None,
    zarr_format: int,
) -> None:
    """Level 0 of each label image under ``target/labels``, and the group listing them."""
    fmt = FORMATS[zarr_format]
    group = zarr.open_group(target / "labels", mode="w-", zarr_format=zarr_format)
    document = fmt.empty_group()
    fmt.ngff_of_document(document)["labels"] = [folder for folder, _, _ in label_arrays]
    group.attrs.update(fmt.attributes(document))
    for folder, name, array in label_arrays:
        dtype = np.dtype(array.dtype)
        _write_level0(
            target / "labels" / folder,
            array,
            dtype,
            names,
            scale,
            translation,
            name,
            True,
            unit,
            None,
            zarr_format,
        )


def _axis_names(axes: Sequence[str] | None, ndim: int) -> list[str]:
    if axes is None:
        return [a.name for a in default_axes(ndim)]
    names = [str(a).lower() for a in axes]
    if len(names) != ndim or len(set(names)) != ndim or not set(names) <= set(_AXIS_TYPES):
        return [a.name for a in default_axes(ndim)]
    return names


def _per_axis(values: Sequence[float] | None, ndim: int, default: float, what: str) -> list:
    if values is None:
        return [default] * ndim
    values = [float(v) for v in values]
    if len(values) != ndim:
        raise PyramidError(f"{what} has {len(values)} entries for {ndim} axes")
    return values


def _write_level0(
    target: Path,
    data: Any,
    dtype: np.dtype,
    names: list[str],
    scale: list[float],
    translation: list[float],
    name: str | None,
    labels: bool,
    unit: str | None,
    omero: dict[str, Any] | None,
    zarr_format: int,
) -> None:
    shape = tuple(int(n) for n in data.shape)
    chunks = tuple(
        min(n, _PLANE_CHUNK) if axis in "yx" else 1 for axis, n in zip(names, shape, strict=True)
    )
    layout: dict[str, Any] = (
        {"chunk_key_encoding": {"name": "v2", "separator": "/"}}
        if zarr_format == 2
        else {"dimension_names": names}
    )
    group = zarr.open_group(target, mode="w-", zarr_format=zarr_format)
    array = group.create_array("0", shape=shape, chunks=chunks, dtype=dtype, **layout)
    # Plane by plane, so a big dask layer never has to fit in memory at once.
    for index in np.ndindex(*shape[:-2]):
        array[index] = np.asarray(data[index])
    transforms: list[dict[str, Any]] = [{"type": "scale", "scale": scale}]
    if any(translation):
        transforms.append({"type": "translation", "translation": translation})
    axes = []
    for axis in names:
        entry = {"name": axis, "type": _AXIS_TYPES[axis]}
        if unit and axis in "zyx":
            entry["unit"] = unit
        axes.append(entry)
    fmt = FORMATS[zarr_format]
    multiscale = fmt.new_multiscale(name or target.name, axes)
    multiscale["datasets"] = [{"path": "0", "coordinateTransformations": transforms}]
    document = fmt.empty_group()
    ngff = fmt.ngff_of_document(document)
    ngff["multiscales"] = [multiscale]
    if labels:
        ngff["image-label"] = {"version": fmt.ngff_version} if zarr_format == 2 else {}
    elif omero is not None:
        ngff["omero"] = omero
    group.attrs.update(fmt.attributes(document))


def _omero(
    channels: Sequence[ChannelDisplay] | None,
    names: Sequence[str],
    shape: Sequence[int],
    dtype: np.dtype,
) -> dict[str, Any] | None:
    """NGFF ``omero`` metadata for ``channels``; None when there is nothing to say."""
    if not channels:
        return None
    count = shape[names.index("c")] if "c" in names else 1
    if len(channels) != count:
        raise PyramidError(
            f"{len(channels)} channel display settings for {count} channel(s); give one per "
            "channel"
        )
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        full: tuple[float, float] | None = (float(info.min), float(info.max))
    else:
        full = None
    entries = []
    for channel in channels:
        color = channel.color.upper().lstrip("#")
        if len(color) != 6 or any(c not in "0123456789ABCDEF" for c in color):
            raise PyramidError(f"channel colour {channel.color!r} is not six hex digits")
        start, end = channel.window if channel.window is not None else (full or (0.0, 1.0))
        low, high = channel.limits or full or (start, end)
        entry: dict[str, Any] = {
            "label": channel.label,
            "color": color,
            "active": bool(channel.active),
            "window": {
                "start": float(start),
                "end": float(end),
                "min": float(min(low, start)),
                "max": float(max(high, end)),
            },
        }
        entries.append(entry)
    return {"channels": entries, "rdefs": {"model": "color"}}
