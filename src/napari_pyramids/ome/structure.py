"""What an OME-Zarr group is, read strictly from its metadata: an image, a label image, a
labels group, a well, a plate or a bioformats2raw collection (NGFF 0.4 on zarr v2, 0.5 on v3).

The metadata of a plate, a well, a labels group or a collection names the groups it holds.
Those names are input like any other: each must be a plain relative path inside the dataset
(no ``..``, no absolute path, no URL), and a malformed entry is refused naming the entry, what
the group is, and the fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import PyramidError
from ..untrusted import MAX_ARRAY_JSON_BYTES, check_member_path

if TYPE_CHECKING:
    from ..storage.store import Store

IMAGE = "image"
LABEL_IMAGE = "label image"
LABELS = "labels group"
WELL = "well"
PLATE = "plate"
COLLECTION = "bioformats2raw collection"
GROUP = "zarr group"
ARRAY = "zarr array"
FOLDER = "folder"
# Kinds that hold images by their metadata, and so are built as a whole.
DATASET_KINDS = (PLATE, WELL, COLLECTION, LABELS)
BIOFORMATS2RAW = "bioformats2raw.layout"
# A bioformats2raw collection without a 'series' list holds the images 0, 1, 2, ... up to the
# first missing number; more than this is not a collection but a loop over a broken folder.
MAX_SERIES = 100_000


@dataclass(frozen=True)
class GroupNode:
    """One group of a dataset as its metadata describes it.

    Attributes
    ----------
    kind
        One of ``image``, ``label image``, ``labels group``, ``well``, ``plate``,
        ``bioformats2raw collection``, ``zarr group``, ``zarr array`` or ``folder``.
    zarr_format
        2 or 3; None for a folder that is no zarr node.
    ngff_version
        The NGFF version the group declares, if any.
    members
        What the group holds by its metadata, as checked relative paths: a plate's wells, a
        well's fields, a labels group's label images, a collection's images.
    detail
        A few words for a person, e.g. ``"8 rows x 12 columns, 96 wells"``.
    """

    kind: str
    zarr_format: int | None
    ngff_version: str | None
    members: tuple[str, ...] = ()
    detail: str = ""

    @property
    def what(self) -> str:
        """The kind with its format, for messages: ``"a plate (zarr v3 / NGFF 0.5)"``."""
        article = "an" if self.kind[0] in "aeiou" else "a"
        if self.zarr_format is None:
            return f"{article} {self.kind}"
        version = f" / NGFF {self.ngff_version}" if self.ngff_version else ""
        return f"{article} {self.kind} (zarr v{self.zarr_format}{version})"


def read_node(store: Store) -> GroupNode:
    """Classify the group (or folder) of ``store`` from its metadata, checking what it lists.

    A group whose own metadata cannot be read is returned as an image: the image reader's
    checks name what is wrong with it (as they do when the path is passed as an image).

    Raises
    ------
    PyramidError
        If the plate, well, labels or series metadata is malformed, or lists a member path
        that would leave the dataset.
    """
    where = store.describe()
    try:
        found = _group_attributes(store)
    except PyramidError:
        # The group's own metadata is unreadable: only an image reader's checks can say what
        # is wrong with it, so it goes to them as an image.
        return GroupNode(IMAGE, None, None, (), "unreadable metadata")
    if found is None:
        return GroupNode(FOLDER, None, None)
    zarr_format, node_type, ome, version = found
    if node_type == "array":
        return GroupNode(ARRAY, zarr_format, None)
    if "multiscales" in ome:
        kind = LABEL_IMAGE if "image-label" in ome else IMAGE
        return GroupNode(kind, zarr_format, version or _multiscale_version(ome))
    if "plate" in ome:
        wells, detail = _plate(ome["plate"], where)
        plate_version = version or _member(ome["plate"], "version")
        return GroupNode(PLATE, zarr_format, plate_version, wells, detail)
    if "well" in ome:
        fields = _well(ome["well"], where)
        well_version = version or _member(ome["well"], "version")
        return GroupNode(WELL, zarr_format, well_version, fields, _count(fields, "field"))
    if BIOFORMATS2RAW in ome:
        series = _series(store, where)
        return GroupNode(COLLECTION, zarr_format, version, series, _count(series, "image"))
    if "labels" in ome:
        names = _labels(ome["labels"], where)
        return GroupNode(LABELS, zarr_format, version, names, _count(names, "label image"))
    if holds_array(store, "0"):
        return GroupNode(IMAGE, zarr_format, None, (), "a bare array '0'")
    return GroupNode(GROUP, zarr_format, version)


def _count(members: Sequence[Any], noun: str) -> str:
    return f"{len(members)} {noun}{'s' * (len(members) != 1)}"


def not_an_image(where: str, ome: dict[str, Any], zarr_format: int) -> str | None:
    """The message for a group a user passed as an image that is a plate, well, labels group
    or collection; None when its metadata says it is none of those."""
    for key, kind, example in (
        ("plate", PLATE, "A/1/0"),
        ("well", WELL, "0"),
        (BIOFORMATS2RAW, COLLECTION, "0"),
        ("labels", LABELS, "cells"),
    ):
        if key in ome:
            version = ome.get("version") if zarr_format == 3 else _member(ome.get(key), "version")
            node = GroupNode(kind, zarr_format, version if isinstance(version, str) else None)
            return (
                f"{where} is {node.what}, not an image: pass one of its images (e.g. "
                f"{where}/{example}), or build all of them with `napari-pyramids build {where}` "
                "(library: build_dataset)"
            )
    return None


def holds_array(store: Store, rel: str) -> bool:
    """Whether ``rel`` holds a zarr array (a v3 ``zarr.json`` may describe a group)."""
    found = store.array_format(rel)
    if found != 3:
        return found is not None
    document = store.read_json(f"{rel}/zarr.json", "array metadata", MAX_ARRAY_JSON_BYTES)
    return isinstance(document, dict) and document.get("node_type") == "array"


def _group_attributes(store: Store) -> tuple[int, str, dict[str, Any], str | None] | None:
    """(zarr format, node type, NGFF keys, version in 0.5's ``ome``) or None for a folder."""
    document = store.read_json("zarr.json", "group metadata")
    if document is not None:
        if not isinstance(document, dict) or document.get("zarr_format") != 3:
            raise PyramidError(
                f"{store.describe('zarr.json')} is not zarr v3 metadata (needs zarr_format 3). "
                "Fix or restore the file."
            )
        node_type = str(document.get("node_type"))
        attributes = document.get("attributes")
        attributes = attributes if isinstance(attributes, dict) else {}
        ome = attributes.get("ome")
        if not isinstance(ome, dict):
            # Pre-0.5 keys in a v3 group: read_image explains what to fix.
            return 3, node_type, attributes, None
        version = ome.get("version")
        return 3, node_type, ome, version if isinstance(version, str) else None
    if store.is_file(".zarray"):
        return 2, "array", {}, None
    zattrs = store.read_json(".zattrs", "group attributes")
    if zattrs is None and not store.is_file(".zgroup"):
        if holds_array(store, "0"):
            return store.array_format("0") or 2, "group", {}, None
        return None
    if zattrs is not None and not isinstance(zattrs, dict):
        raise PyramidError(
            f"{store.describe('.zattrs')} must hold a JSON object. Fix or restore the file."
        )
    return 2, "group", zattrs or {}, None


def _multiscale_version(ome: dict[str, Any]) -> str | None:
    multiscales = ome.get("multiscales")
    if isinstance(multiscales, list) and multiscales:
        version = _member(multiscales[0], "version")
        return version if isinstance(version, str) else None
    return None


def _entries(value: Any, where: str, key: str, entry_key: str | None) -> list[Any]:
    """The list at ``key`` (of objects when ``entry_key`` is given), checked."""
    if not isinstance(value, list):
        raise PyramidError(f"{where}: '{key}' must be a list. Fix the metadata.")
    if entry_key is not None:
        for i, entry in enumerate(value):
            if not isinstance(entry, dict):
                raise PyramidError(
                    f"{where}: {key}[{i}] must be an object with a '{entry_key}'. Fix the "
                    "metadata."
                )
    return value


def _unique(paths: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(paths))


def _plate(plate: Any, where: str) -> tuple[tuple[str, ...], str]:
    what = f"{where} (a plate)"
    if not isinstance(plate, dict):
        raise PyramidError(f"{what}: 'plate' must be a JSON object. Fix the plate metadata.")
    wells = _entries(plate.get("wells"), what, "plate.wells", "path")
    paths = [
        check_member_path(w.get("path"), f"{what}: plate.wells[{i}]", "A/1")
        for i, w in enumerate(wells)
    ]
    rows, columns = plate.get("rows"), plate.get("columns")
    size = ""
    if isinstance(rows, list) and isinstance(columns, list):
        size = f"{_count(rows, 'row')} x {_count(columns, 'column')}, "
    return _unique(paths), f"{size}{_count(paths, 'well')}"


def _well(well: Any, where: str) -> tuple[str, ...]:
    what = f"{where} (a well)"
    if not isinstance(well, dict):
        raise PyramidError(f"{what}: 'well' must be a JSON object. Fix the well metadata.")
    images = _entries(well.get("images"), what, "well.images", "path")
    paths = [
        check_member_path(image.get("path"), f"{what}: well.images[{i}]", "0")
        for i, image in enumerate(images)
    ]
    return _unique(paths)


def _labels(labels: Any, where: str) -> tuple[str, ...]:
    what = f"{where} (a labels group)"
    names = _entries(labels, what, "labels", None)
    paths = [
        check_member_path(name, f"{what}: labels[{i}]", "cells") for i, name in enumerate(names)
    ]
    return _unique(paths)


def _series(store: Store, where: str) -> tuple[str, ...]:
    """A collection's images: the OME group's ``series`` list, else 0, 1, 2... while present."""
    what = f"{where} (a bioformats2raw collection)"
    ome_group = store.child("OME") if store.exists("OME") else None
    series = None
    if ome_group is not None:
        found = _group_attributes(ome_group)
        if found is not None and "series" in found[2]:
            series = found[2]["series"]
    if series is not None:
        names = _entries(series, f"{what}: OME", "series", None)
        paths = [
            check_member_path(name, f"{what}: OME series[{i}]", "0")
            for i, name in enumerate(names)
        ]
        return _unique(paths)
    found_series = []
    while len(found_series) < MAX_SERIES and store.exists(str(len(found_series))):
        found_series.append(str(len(found_series)))
    return tuple(found_series)


def _member(document: Any, key: str) -> Any:
    return document.get(key) if isinstance(document, dict) else None
