"""An OME-Zarr image on disk, read strictly from its metadata documents.

We parse ``.zattrs``/``.zarray`` (zarr v2, NGFF 0.4) and ``zarr.json`` (zarr v3, NGFF 0.5)
ourselves rather than through zarr so that every malformed or hostile entry gets one clear
error naming it, and so that new levels can be described by editing level 0's own metadata
document (same codecs, fill value, separators and dimension names by construction).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import PyramidError
from ..untrusted import MAX_ARRAY_JSON_BYTES, check_level_path
from .format import Format, _int_list, _member, format_of
from .structure import holds_array, not_an_image

if TYPE_CHECKING:
    from ..storage.store import Store, UrlPath

# Above this many voxels a shape is not an image anyone acquired but broken metadata
# (2**48 voxels is 512 TiB of uint16).
MAX_VOXELS = 2**48
FIX_NGFF = "Fix the multiscales metadata (see the OME-NGFF specification) or restore it."
# A level at least halves Y and X, so 2**48 voxels allow about 48 levels; a longer list is
# broken or hostile metadata (and every listed level is checked, copied and maybe replaced).
MAX_LEVELS = 64
_DEFAULT_AXES = {
    2: ("y", "x"),
    3: ("z", "y", "x"),
    4: ("c", "z", "y", "x"),
    5: ("t", "c", "z", "y", "x"),
}
_AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}


@dataclass(frozen=True)
class Axis:
    """One NGFF axis."""

    name: str
    type: str | None = None
    unit: str | None = None


@dataclass(frozen=True)
class ArrayInfo:
    """A stored array as its metadata document describes it."""

    path: str
    zarr_format: int
    shape: tuple[int, ...]
    dtype: np.dtype
    chunks: tuple[int, ...]
    shards: tuple[int, ...] | None
    document: dict[str, Any] = field(repr=False, compare=False)
    # How chunk indices become keys: "c/" and "/" for v3's default encoding, "" and "." or
    # "/" for v2 (and v3's "v2" encoding).
    key_prefix: str = ""
    separator: str = "."

    def chunk_key(self, index: tuple[int, ...]) -> str:
        """The key of the chunk (shard) at grid position ``index``, inside the array."""
        return self.key_prefix + self.separator.join(map(str, index))

    @property
    def write_unit(self) -> tuple[int, ...]:
        """The smallest region that can be written without touching a neighbour's bytes."""
        return self.shards or self.chunks

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def format(self) -> Format:
        return format_of(self.zarr_format)

    @property
    def codec_summary(self) -> str:
        """A short human description of how chunks are encoded."""
        return self.format.codec_summary(self.document)


@dataclass(frozen=True)
class OmeZarrImage:
    """An image group: its metadata document, axes, level paths and level 0.

    ``root`` is where the group is: a local path, or a URL that joins like one.
    """

    root: Path | UrlPath
    store: Store = field(repr=False, compare=False)
    zarr_format: int
    ngff_version: str
    metadata_file: str
    group_document: dict[str, Any] = field(repr=False, compare=False)
    multiscale: dict[str, Any] = field(repr=False, compare=False)
    has_multiscales: bool
    axes: tuple[Axis, ...]
    level_paths: tuple[str, ...]
    level_scales: tuple[tuple[float, ...], ...]
    level0: ArrayInfo
    translation0: tuple[float, ...]
    is_label: bool

    @property
    def ndim(self) -> int:
        return len(self.axes)

    @property
    def scale0(self) -> tuple[float, ...]:
        return self.level_scales[0]

    def axis_index(self, name: str) -> int | None:
        """Index of the axis called ``name`` (case-insensitive), or None."""
        for i, axis in enumerate(self.axes):
            if axis.name.lower() == name:
                return i
        return None

    @property
    def yx_axes(self) -> tuple[int, int]:
        """Indices of the Y and X axes, from the axis names, else the last two space axes."""
        y, x = self.axis_index("y"), self.axis_index("x")
        if y is not None and x is not None:
            return y, x
        space = [i for i, a in enumerate(self.axes) if a.type == "space"]
        if len(space) < 2:
            raise PyramidError(
                f"{self.root}: cannot tell which axes are Y and X from the axes "
                f"{[a.name for a in self.axes]}; name them 'y' and 'x' in the multiscales "
                "metadata"
            )
        return space[-2], space[-1]

    @property
    def z_axis(self) -> int | None:
        """Index of the Z axis, if the image has one."""
        z = self.axis_index("z")
        if z is not None:
            return z
        space = [i for i, a in enumerate(self.axes) if a.type == "space"]
        return space[-3] if len(space) >= 3 else None

    @property
    def format(self) -> Format:
        """What differs between zarr v2 / NGFF 0.4 and zarr v3 / NGFF 0.5."""
        return format_of(self.zarr_format)

    @property
    def attributes(self) -> dict[str, Any]:
        """The group's user attributes (``.zattrs`` or ``zarr.json['attributes']``)."""
        return self.format.attributes(self.group_document)

    @property
    def ome_attributes(self) -> dict[str, Any]:
        """Where the NGFF keys live: the attributes (0.4) or their ``ome`` member (0.5)."""
        return self.format.ngff_view(self.attributes)


def read_image(store: Store) -> OmeZarrImage:
    """Read an OME-Zarr image group's metadata and level 0, checking every entry.

    Parameters
    ----------
    store
        The image group's store (see :func:`napari_pyramids.images.open_image`).

    Returns
    -------
    OmeZarrImage
        The parsed image. A group that holds only a bare array ``0`` and no multiscales
        metadata is described with guessed axes (see :func:`default_axes`).

    Raises
    ------
    PyramidError
        If the folder is not a zarr group, its metadata is malformed, or level 0 is missing
        or unsupported.
    """
    root = store.location()
    zarr_format, metadata_file, document = _read_group_document(store, root)
    fmt = format_of(zarr_format)
    attrs = fmt.attributes(document)
    if not isinstance(attrs, dict):
        raise PyramidError(f"{root / metadata_file}: attributes must be a JSON object")
    ome = fmt.ngff(attrs, f"{root / metadata_file}")

    if "multiscales" in ome:
        multiscale, version = _first_multiscale(root, metadata_file, ome, zarr_format)
        level_paths, scales, translation0 = _datasets(root, multiscale)
        axes_json = multiscale.get("axes")
        has_multiscales = True
    else:
        dataset = not_an_image(str(root), ome, zarr_format)
        if dataset is not None:
            raise PyramidError(dataset)
        if not holds_array(store, "0"):
            raise PyramidError(
                f"{root} has no multiscales metadata and no array '0': it is not an OME-Zarr "
                "image. Pass the image group (e.g. plate.zarr/B/03/0), or a plate, well or "
                "folder of images to `napari-pyramids build`."
            )
        multiscale, version, axes_json = {}, fmt.ngff_version, None
        level_paths, scales, translation0 = ("0",), None, None
        has_multiscales = False

    level0 = read_array_info(store, level_paths[0], zarr_format)
    ndim = len(level0.shape)
    if not 2 <= ndim <= 5:
        raise PyramidError(
            f"{root}/{level0.path} has {ndim} dimensions; OME-Zarr images have 2 to 5 "
            "(t, c, z, y, x). Nothing was written."
        )
    axes = _axes(root, axes_json, ndim) if has_multiscales else default_axes(ndim)
    if scales is None:
        scales = ((1.0,) * ndim,)
    for i, scale in enumerate(scales):
        if len(scale) != ndim:
            raise PyramidError(
                f"{root}: dataset {level_paths[i]!r} has a scale of length {len(scale)} but "
                f"the image has {ndim} axes. Fix the coordinateTransformations."
            )
    if translation0 is None:
        translation0 = (0.0,) * ndim
    elif len(translation0) != ndim:
        raise PyramidError(
            f"{root}: dataset {level_paths[0]!r} has a translation of length "
            f"{len(translation0)} but the image has {ndim} axes"
        )
    return OmeZarrImage(
        root=root,
        store=store,
        zarr_format=zarr_format,
        ngff_version=version,
        metadata_file=metadata_file,
        group_document=document,
        multiscale=multiscale,
        has_multiscales=has_multiscales,
        axes=axes,
        level_paths=level_paths,
        level_scales=scales,
        level0=level0,
        translation0=translation0,
        is_label=_is_label(store, ome),
    )


def same_metadata(first: OmeZarrImage, second: OmeZarrImage) -> bool:
    """Whether two reads of one image found the same metadata: the group's document, level
    0's, and everything parsed from them."""
    return (
        first == second
        and first.group_document == second.group_document
        and first.level0.document == second.level0.document
    )


def default_axes(ndim: int) -> tuple[Axis, ...]:
    """Axes guessed for a bare array: yx, zyx, czyx or tczyx by number of dimensions."""
    return tuple(Axis(name, _AXIS_TYPES[name]) for name in _DEFAULT_AXES[ndim])


def _read_group_document(store: Store, root: Path | UrlPath) -> tuple[int, str, dict[str, Any]]:
    v3 = store.read_json("zarr.json", "group metadata")
    if v3 is not None:
        if not isinstance(v3, dict):
            raise PyramidError(
                f"{root / 'zarr.json'} must hold a JSON object. Fix or restore the file."
            )
        if v3.get("node_type") == "array":
            raise PyramidError(
                f"{root} is a zarr array, not an image group: pass its parent folder"
            )
        if v3.get("zarr_format") != 3 or v3.get("node_type") != "group":
            raise PyramidError(
                f"{root / 'zarr.json'} is not zarr v3 group metadata (needs zarr_format 3 "
                "and node_type 'group')"
            )
        return 3, "zarr.json", v3
    if store.read_json(".zarray", "array metadata") is not None:
        raise PyramidError(f"{root} is a zarr array, not an image group: pass its parent folder")
    zgroup = store.read_json(".zgroup", "group metadata")
    zattrs = store.read_json(".zattrs", "group attributes")
    if zgroup is None and zattrs is None:
        fmt = store.array_format("0")
        if fmt is not None:
            # A bare array without group metadata: treat the folder as a v2/v3 group.
            return fmt, format_of(fmt).group_file, format_of(fmt).empty_group()
        raise PyramidError(
            f"{root} is not a zarr group (no zarr.json, .zgroup or .zattrs): pass the folder "
            "of an OME-Zarr image"
        )
    if zgroup is not None and (not isinstance(zgroup, dict) or zgroup.get("zarr_format") != 2):
        raise PyramidError(f"{root / '.zgroup'} is not zarr v2 group metadata")
    if zattrs is None:
        zattrs = {}
    if not isinstance(zattrs, dict):
        raise PyramidError(f"{root / '.zattrs'} must hold a JSON object. Fix or restore the file.")
    return 2, ".zattrs", zattrs


def _first_multiscale(
    root: Path | UrlPath, metadata_file: str, ome: dict[str, Any], zarr_format: int
) -> tuple[dict[str, Any], str]:
    where = f"{root / metadata_file}"
    multiscales = ome["multiscales"]
    if not isinstance(multiscales, list) or not multiscales:
        raise PyramidError(f"{where}: 'multiscales' must be a non-empty list. {FIX_NGFF}")
    multiscale = multiscales[0]
    if not isinstance(multiscale, dict):
        raise PyramidError(f"{where}: multiscales[0] must be a JSON object. {FIX_NGFF}")
    fmt = format_of(zarr_format)
    version = fmt.multiscale_version(ome, multiscale)
    if version != fmt.ngff_version:
        raise PyramidError(
            f"{where}: NGFF version {version!r} in a zarr v{zarr_format} group is not "
            f"supported; napari-pyramids writes NGFF 0.4 (zarr v2) and 0.5 (zarr v3). "
            "Convert the image first (e.g. with ome-zarr-py or ngff-zarr)."
        )
    return multiscale, version


def _number_list(value: Any, where: str, positive: bool) -> tuple[float, ...]:
    if not isinstance(value, list) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in value
    ):
        raise PyramidError(f"{where} must be a list of numbers, got {str(value)[:80]}. {FIX_NGFF}")
    numbers = tuple(float(v) for v in value)
    if not all(math.isfinite(v) for v in numbers) or (positive and min(numbers, default=1) <= 0):
        raise PyramidError(
            f"{where} must hold finite{' positive' if positive else ''} numbers. {FIX_NGFF}"
        )
    return numbers


def _datasets(
    root: Path | UrlPath, multiscale: dict[str, Any]
) -> tuple[tuple[str, ...], tuple[tuple[float, ...], ...], tuple[float, ...] | None]:
    datasets = multiscale.get("datasets")
    if not isinstance(datasets, list) or not datasets:
        raise PyramidError(f"{root}: multiscales[0].datasets must be a non-empty list. {FIX_NGFF}")
    if len(datasets) > MAX_LEVELS:
        raise PyramidError(
            f"{root}: multiscales[0].datasets lists {len(datasets)} levels; a pyramid has at "
            f"most {MAX_LEVELS} (each level at least halves Y and X). Fix the multiscales "
            "metadata."
        )
    paths, scales, translation0 = [], [], None
    for i, ds in enumerate(datasets):
        what = f"{root}: multiscales[0].datasets[{i}]"
        if not isinstance(ds, dict):
            raise PyramidError(f"{what} must be a JSON object. {FIX_NGFF}")
        paths.append(check_level_path(ds.get("path"), what))
        transforms = ds.get("coordinateTransformations")
        if not isinstance(transforms, list) or not transforms:
            raise PyramidError(
                f"{what}.coordinateTransformations must be a non-empty list. {FIX_NGFF}"
            )
        scale = None
        for t in transforms:
            if not isinstance(t, dict):
                raise PyramidError(
                    f"{what}.coordinateTransformations entries must be objects. {FIX_NGFF}"
                )
            if t.get("type") == "scale":
                scale = _number_list(t.get("scale"), f"{what} scale", positive=True)
            elif t.get("type") == "translation" and i == 0:
                translation0 = _number_list(t.get("translation"), f"{what} translation", False)
        if scale is None:
            raise PyramidError(f"{what} has no scale transformation. {FIX_NGFF}")
        scales.append(scale)
    duplicates = sorted(p for p, n in Counter(paths).items() if n > 1)
    if duplicates:
        raise PyramidError(
            f"{root}: multiscales[0].datasets lists the path(s) {duplicates} more than once; "
            "each level needs its own array. Fix the metadata."
        )
    return tuple(paths), tuple(scales), translation0


def _axes(root: Path | UrlPath, axes_json: Any, ndim: int) -> tuple[Axis, ...]:
    where = f"{root}: multiscales[0].axes"
    if axes_json is None:
        raise PyramidError(
            f"{where} is missing; NGFF 0.4/0.5 images must name their axes. {FIX_NGFF}"
        )
    if not isinstance(axes_json, list):
        raise PyramidError(f"{where} must be a list of axis objects. {FIX_NGFF}")
    if len(axes_json) != ndim:
        raise PyramidError(
            f"{where} names {len(axes_json)} axes but level 0 has {ndim} dimensions. "
            "Fix the metadata."
        )
    axes = []
    for i, entry in enumerate(axes_json):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise PyramidError(f"{where}[{i}] must be an object with a string 'name'. {FIX_NGFF}")
        kind, unit = entry.get("type"), entry.get("unit")
        if kind is not None and not isinstance(kind, str):
            raise PyramidError(f"{where}[{i}].type must be a string. {FIX_NGFF}")
        if unit is not None and not isinstance(unit, str):
            raise PyramidError(f"{where}[{i}].unit must be a string. {FIX_NGFF}")
        axes.append(Axis(entry["name"], kind, unit))
    names = [a.name.lower() for a in axes]
    if len(set(names)) != len(names):
        raise PyramidError(f"{where} repeats an axis name: {[a.name for a in axes]}. {FIX_NGFF}")
    return tuple(axes)


def _is_label(store: Store, ome: dict[str, Any]) -> bool:
    if "image-label" in ome:
        return True
    parent = store.parent()
    if parent is None or parent.name() != "labels":
        return False
    for name in ("zarr.json", ".zattrs"):
        try:
            doc = parent.read_json(name, "labels group metadata")
        except PyramidError:
            return False
        # The parent group is outside the image and only a hint: any shape but the expected
        # one means "not a labels group", never a crash.
        attrs = _member(_member(doc, "attributes"), "ome") if name == "zarr.json" else doc
        labels = _member(attrs, "labels")
        if isinstance(labels, list) and store.name() in labels:
            return True
    return False


def read_array_info(store: Store, rel: str, zarr_format: int) -> ArrayInfo:
    """Parse the metadata document of array ``rel`` of a group, checking it strictly."""
    root = store.location()
    folder = root / rel
    found = store.array_format(rel)
    if found is None:
        raise PyramidError(
            f"{root}: the multiscales metadata lists level {rel!r} but {folder} holds no zarr "
            "array. Restore the array or fix the metadata."
        )
    if found != zarr_format:
        raise PyramidError(
            f"{folder} is a zarr v{found} array inside a zarr v{zarr_format} group; an "
            "OME-Zarr image keeps one format. Convert the image first."
        )
    name = format_of(zarr_format).array_file
    doc = store.read_json(f"{rel}/{name}", "array metadata", max_bytes=MAX_ARRAY_JSON_BYTES)
    attributes = format_of(zarr_format).array_attributes_file
    if attributes:
        # zarr reads an array's .zattrs too: it must be as harmless as any metadata.
        store.read_json(f"{rel}/{attributes}", "array attributes", max_bytes=MAX_ARRAY_JSON_BYTES)
    return parse_array_info(rel, zarr_format, doc, f"{folder / name}")


def parse_array_info(rel: str, zarr_format: int, doc: Any, where: str) -> ArrayInfo:
    """Check an array's metadata document strictly; ``where`` names it in messages."""
    if not isinstance(doc, dict):
        raise PyramidError(f"{where} must hold a JSON object. Fix or restore the file.")
    shape = _int_list(doc.get("shape"), f"{where}: shape", 0)
    fmt = format_of(zarr_format)
    dtype, chunks, shards = fmt.array_layout(doc, where, len(shape))
    _check_fill_value(doc.get("fill_value"), where)
    if len(chunks) != len(shape) or (shards and len(shards) != len(shape)):
        raise PyramidError(
            f"{where}: chunks have {len(chunks)} dims but shape has {len(shape)}. "
            "Fix the metadata."
        )
    if shards and any(s % c for s, c in zip(shards, chunks, strict=True)):
        raise PyramidError(
            f"{where}: shard shape {shards} is not a multiple of chunks {chunks}, so it is "
            "not valid zarr. Fix the metadata."
        )
    if 0 in shape:
        raise PyramidError(
            f"{where}: shape {shape} is empty along an axis; nothing to coarsen. Check that "
            "this is the image you meant, or restore its metadata."
        )
    voxels = math.prod(shape)
    if voxels > MAX_VOXELS:
        raise PyramidError(
            f"{where}: shape {shape} claims {voxels:.3g} voxels, more than the {MAX_VOXELS:.3g} "
            "a build can honour; the metadata is almost certainly wrong. Fix the shape."
        )
    prefix, separator = fmt.key_encoding(doc)
    return ArrayInfo(rel, zarr_format, shape, dtype, chunks, shards, doc, prefix, separator)


def _check_fill_value(value: Any, where: str) -> None:
    special = ("NaN", "Infinity", "-Infinity")
    if value is None or isinstance(value, int | float) or value in special:
        return
    if isinstance(value, str) and re.fullmatch(r"0x[0-9a-fA-F]{1,16}", value):
        return  # zarr v3 spells exact float bit patterns in hex
    raise PyramidError(
        f"{where}: fill_value {value!r:.80} is not a number. Fix the metadata (0 is usual)."
    )
