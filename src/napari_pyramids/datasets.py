"""Every image under a path: an image, a plate, a well, a bioformats2raw collection, a labels
group or any folder of OME-Zarr images, found from their metadata; and whether each image's
label images have as many levels as it has (NGFF 0.4 and 0.5 require it).
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from .errors import PyramidError
from .images import open_image
from .ome.image import OmeZarrImage
from .ome.structure import (
    ARRAY,
    COLLECTION,
    FOLDER,
    GROUP,
    IMAGE,
    LABEL_IMAGE,
    LABELS,
    PLATE,
    WELL,
    GroupNode,
    read_node,
)
from .storage import Store, open_store

# How deep a folder that is no dataset is searched for images (a folder of plates of wells of
# fields is four deep); deeper than this is not a dataset but someone's home directory.
MAX_FOLDER_DEPTH = 6
# What each kind of dataset holds by its metadata.
_MEMBER_KIND = {PLATE: WELL, WELL: IMAGE, COLLECTION: IMAGE, LABELS: LABEL_IMAGE}


@dataclass(frozen=True)
class DatasetImage:
    """One image of a dataset (a field, a series, a label image...).

    Attributes
    ----------
    path
        The image group.
    name
        Its path relative to the dataset (``"A/1/0"``); ``"."`` when the dataset is the image.
    labels
        The names its ``labels`` group lists (built with it, to as many levels).
    is_label
        Whether it was found as a label image (in a labels group, or tagged ``image-label``).
    problem
        Why it cannot be built, when the dataset lists it but it is missing or malformed.
    """

    path: Path
    name: str
    labels: tuple[str, ...] = ()
    is_label: bool = False
    problem: str | None = None

    def label_path(self, label: str) -> Path:
        return self.path / "labels" / label

    def label_name(self, label: str) -> str:
        return f"{self.name}/labels/{label}" if self.name != "." else f"labels/{label}"


@dataclass(frozen=True)
class Dataset:
    """What a path holds: its own kind and every image found under it, in order."""

    root: Path
    node: GroupNode
    images: tuple[DatasetImage, ...]

    @property
    def is_one_image(self) -> bool:
        """Whether the path is itself an image (or a label image), not a collection of them."""
        return self.node.kind in (IMAGE, LABEL_IMAGE)

    @property
    def image_count(self) -> int:
        """Images and label images, counting each image's labels."""
        return sum(1 + len(image.labels) for image in self.images)

    def describe(self) -> str:
        """``/data/plate.zarr: a plate (zarr v2 / NGFF 0.4), 8 rows x 12 columns, 96 wells``."""
        detail = f", {self.node.detail}" if self.node.detail else ""
        return f"{self.root}: {self.node.what}{detail}"


def find_images(path: str | os.PathLike[str]) -> Dataset:
    """Every image under ``path``, with the label images each one lists.

    Parameters
    ----------
    path
        An image, a label image, a labels group, a well, a plate, a bioformats2raw collection,
        or a folder holding any of those (searched up to six folders deep).

    Returns
    -------
    Dataset
        The path's kind and its images in the dataset's own order (a plate's wells as its
        metadata lists them, a folder's entries by name). An image the metadata lists but
        that is missing or unreadable is kept, with the reason as its ``problem``.

    Raises
    ------
    PyramidError
        If the path does not exist, its own metadata is malformed, or no image is found.
    """
    store = open_store(path)
    root = Path(store.describe())
    node = read_node(store)
    if node.kind == ARRAY:
        raise PyramidError(f"{root} is a zarr array, not an image group: pass its parent folder")
    images: list[DatasetImage] = []
    _collect(store, node, ".", 0, images)
    if not images:
        what = node.what
        if node.kind == FOLDER:
            what = "not a zarr group (no zarr.json, .zgroup or .zattrs)"
        raise PyramidError(
            f"{root} is {what} and holds no OME-Zarr image (searched {MAX_FOLDER_DEPTH} "
            "folders deep): pass the folder of an OME-Zarr image, a plate, a well, a "
            "bioformats2raw collection or a folder holding them"
        )
    return Dataset(root, node, tuple(images))


def _join(name: str, rel: str) -> str:
    return rel if name == "." else f"{name}/{rel}"


def _collect(
    store: Store, node: GroupNode, name: str, depth: int, out: list[DatasetImage]
) -> None:
    """Append the images of the group ``store`` (already read as ``node``) to ``out``."""
    root = Path(store.describe())
    if node.kind == IMAGE:
        labels, problem = label_names(store)
        out.append(DatasetImage(root, name, labels))
        if problem is not None:
            out.append(DatasetImage(root / "labels", _join(name, "labels"), problem=problem))
    elif node.kind == LABEL_IMAGE:
        out.append(DatasetImage(root, name, is_label=True))
    elif node.kind in _MEMBER_KIND:
        for rel in node.members:
            _collect_member(store, node, rel, _join(name, rel), depth, out)
    elif node.kind in (GROUP, FOLDER) and depth < MAX_FOLDER_DEPTH:
        for rel in store.folders():
            child = store.child(rel)
            try:
                child_node = read_node(child)
            except PyramidError as exc:
                out.append(DatasetImage(root / rel, _join(name, rel), problem=str(exc)))
                continue
            if child_node.kind != ARRAY:
                _collect(child, child_node, _join(name, rel), depth + 1, out)


def _collect_member(
    store: Store, parent: GroupNode, rel: str, name: str, depth: int, out: list[DatasetImage]
) -> None:
    """A member the parent's metadata lists: it must exist and be of the kind it promises."""
    expected = _MEMBER_KIND[parent.kind]
    where = Path(store.describe()) / rel
    listed = f"the {parent.kind}'s metadata lists {rel!r}"
    try:
        child = store.child(rel)
        if not store.exists(rel):
            raise PyramidError(f"{listed} but {where} does not exist")
        node = read_node(child)
    except PyramidError as exc:
        out.append(DatasetImage(where, name, is_label=expected == LABEL_IMAGE, problem=str(exc)))
        return
    acceptable = {expected, *((IMAGE,) if expected == LABEL_IMAGE else ())}
    if node.kind not in acceptable:
        problem = (
            f"{listed} as a {expected}, but {where} is {node.what}. Fix the {parent.kind}'s "
            "metadata or restore the group."
        )
        out.append(DatasetImage(where, name, is_label=expected == LABEL_IMAGE, problem=problem))
        return
    if expected == LABEL_IMAGE:
        out.append(DatasetImage(where, name, is_label=True))
    else:
        _collect(child, node, name, depth + 1, out)


def label_names(store: Store) -> tuple[tuple[str, ...], str | None]:
    """The label images an image's ``labels`` group lists, or why they cannot be read."""
    if not store.exists("labels"):
        return (), None
    try:
        node = read_node(store.child("labels"))
    except PyramidError as exc:
        return (), str(exc)
    if node.kind != LABELS:
        return (), None
    return node.members, None


# --------------------------------------------------------------------------- labels in step


@dataclass(frozen=True)
class LabelsOutOfStep:
    """A label image whose number of levels differs from its image's."""

    image: Path
    label: Path
    image_levels: int
    label_levels: int
    fix: str

    @property
    def message(self) -> str:
        return (
            f"label image {self.label} has {_levels(self.label_levels)} but its image "
            f"{self.image} has {_levels(self.image_levels)} (NGFF readers such as "
            f"ome-zarr-models require as many); run: {self.fix}"
        )


def _levels(n: int) -> str:
    return f"{n} level{'s' * (n != 1)}"


def labels_out_of_step(image: OmeZarrImage) -> list[LabelsOutOfStep]:
    """The label images of ``image`` (or, for a label image, itself) that have a different
    number of levels than their image, each with the command that brings them in step.

    Label images that cannot be read are left to the build, which names their problem.
    """
    if image.is_label:
        parent = _parent_image(image)
        if parent is None:
            return []
        mismatch = _compare(parent, image)
        return [mismatch] if mismatch else []
    names, _ = label_names(image.store)
    found = []
    for name in names:
        try:
            label = open_image(image.store.child(f"labels/{name}"))
        except PyramidError:
            continue
        mismatch = _compare(image, label)
        if mismatch:
            found.append(mismatch)
    return found


def _parent_image(label: OmeZarrImage) -> OmeZarrImage | None:
    """The image whose ``labels`` group holds ``label``, if it is one."""
    labels = label.store.parent()
    if labels is None or labels.name() != "labels":
        return None
    try:
        above = labels.parent()
        if above is None:
            return None
        parent = open_image(above)
    except PyramidError:
        return None
    names, _ = label_names(parent.store)
    return parent if label.store.name() in names else None


def _compare(image: OmeZarrImage, label: OmeZarrImage) -> LabelsOutOfStep | None:
    n_image, n_label = len(image.level_paths), len(label.level_paths)
    if n_image == n_label:
        return None
    if n_image > 1:
        command = [
            "napari-pyramids", "build", str(label.root), "--levels", str(n_image),
            *_factor_args(image),
        ]  # fmt: skip
        if n_label > 1:
            command.append("--overwrite")
    else:
        # Only level 0 in the image: giving it the label's levels is the way back in step.
        command = [
            "napari-pyramids", "build", str(image.root), "--levels", str(n_label),
            *_factor_args(label),
        ]  # fmt: skip
    fix = " ".join(shlex.quote(part) for part in command)
    return LabelsOutOfStep(image.root, label.root, n_image, n_label, fix)


def _factor_args(image: OmeZarrImage) -> list[str]:
    """``--factor``/``--z-factor`` reproducing the factors between an image's levels 0 and 1."""
    if len(image.level_scales) < 2:
        return []
    args = []
    x, z = image.yx_axes[1], image.z_axis
    for axis, flag, default in ((x, "--factor", 2), (z, "--z-factor", 1)):
        if axis is None:
            continue
        ratio = image.level_scales[1][axis] / image.level_scales[0][axis]
        factor = round(ratio)
        if abs(ratio - factor) < 1e-6 and factor != default and factor >= 1:
            args += [flag, str(factor)]
    return args


def place_name(image: OmeZarrImage) -> str:
    """Where the image sits, for people: ``plate.zarr/A/1/0`` for a field of a plate (and
    ``plate.zarr/A/1/0/labels/cells`` for its label images), else its folder's name.

    A plate's fields are all named ``0``, ``1``...; only their place tells them apart.
    """
    try:
        place = _place_in_plate(image.store)
    except PyramidError:  # unreadable metadata above the image: not a plate we can name
        place = None
    return place or image.store.name()


def _place_in_plate(store: Store) -> str | None:
    below = [store.name()]
    above = store.parent()
    if above is not None and read_node(above).kind == LABELS:
        field = above.parent()
        if field is None:
            return None
        store, below = field, [field.name(), "labels", *below]
    well = store.parent()
    row = well.parent() if well is not None else None
    plate = row.parent() if row is not None else None
    if well is None or row is None or plate is None:
        return None
    if read_node(well).kind != WELL or read_node(plate).kind != PLATE:
        return None
    return "/".join([plate.name(), row.name(), well.name(), *below])
