"""Painting a label image's level 0 in napari, and what the pyramid then needs refreshed.

napari cannot paint multiscale labels, so an edit happens on a plain Labels layer holding
level 0 (of the plane or region in view, made by :func:`edit_layer_data`; or a level-0
labels layer our reader opened whole). Each Labels ``paint`` event carries the history
atoms of the edit; their bounding boxes are the painted regions (:func:`painted_boxes`).

:class:`LabelEdits` keeps one layer's painted regions, writes them to level 0 through the
storage seam (whole write units, only those where the layer differs from the disk, so an
undo is written back too) and remembers the level-0 regions written since the last update:
exactly what :func:`~napari_pyramids.update_pyramid` is then asked to refresh. Writing
level 0 here is the user's explicit edit, never part of a build.

:func:`level0_changed` asks the change record a build leaves whether any program changed
level 0 since: one listing of level 0's units, no read of its data.

Qt-free: the widget's glue (``_qt/editor.py``) only wires events and buttons to this.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import update
from ..errors import PyramidError
from ..images import open_image
from ..ome.image import OmeZarrImage
from ..storage import open_level_array
from .layers import CHANNEL_KEY, EDIT_KEY, PATH_KEY, channel_axis

Box = tuple[slice, ...]

# Above this many pixels, "Edit labels" takes the region in view rather than the whole plane.
MAX_EDIT_PIXELS = 64 * 2**20


@dataclass(frozen=True)
class EditTarget:
    """Where a Labels layer's data sits in a label image's level 0.

    ``origin`` is the layer data's first pixel in level 0 (layer axes); ``squeezed`` the
    level-0 axis the layer leaves out (a channel axis of length 1), or None.
    """

    root: Path
    origin: tuple[int, ...]
    squeezed: int | None

    def to_level0(self, box: Box) -> Box:
        """A box of the layer's data as a box of level 0."""
        shifted = [slice(s.start + o, s.stop + o) for s, o in zip(box, self.origin, strict=True)]
        if self.squeezed is not None:
            shifted.insert(self.squeezed, slice(0, 1))
        return tuple(shifted)


def edit_target(layer: Any) -> EditTarget | None:
    """Where ``layer`` writes in level 0, or None if it is not an editable level 0 of ours.

    Editable: a layer made by :func:`edit_layer_data`, or a single-level Labels layer our
    reader made from a label image (its data is the whole level 0).
    """
    recorded = layer.metadata.get(EDIT_KEY)
    if isinstance(recorded, dict):
        return EditTarget(Path(recorded["root"]), tuple(recorded["origin"]), recorded["squeezed"])
    path = layer.metadata.get(PATH_KEY)
    if not isinstance(path, str) or getattr(layer, "multiscale", True):
        return None
    if type(layer).__name__ != "Labels":
        return None
    try:
        image = open_image(path)
    except PyramidError:
        return None
    squeezed = _squeezed_axis(image)
    shape = _layer_shape(image.level0.shape, squeezed)
    if not image.is_label or tuple(layer.data.shape) != shape:
        return None
    return EditTarget(image.root, (0,) * len(shape), squeezed)


def _squeezed_axis(image: OmeZarrImage) -> int | None:
    """The level-0 axis a labels layer of ``image`` leaves out (as ``labels_layer`` does)."""
    c = channel_axis(image)
    return c if c is not None and image.level0.shape[c] == 1 else None


def _layer_shape(shape: Sequence[int], squeezed: int | None) -> tuple[int, ...]:
    return tuple(n for i, n in enumerate(shape) if i != squeezed)


def painted_boxes(atoms: Iterable[Any], shape: Sequence[int]) -> list[Box]:
    """The bounding box (in the layer's data) of each history atom of a ``paint`` event.

    An atom is napari's masked paint record (``slice_key``: the painted bounding box) or
    the ``(indices, old, new)`` of ``data_setitem`` (index arrays, one per axis).
    """
    boxes = []
    for atom in atoms:
        key = getattr(atom, "slice_key", None)
        if key is not None:
            box = []
            for k, n in zip(_padded(key, len(shape)), shape, strict=True):
                if isinstance(k, slice):
                    start, stop, _ = k.indices(n)
                else:
                    start, stop = int(k), int(k) + 1
                box.append(slice(start, stop))
            boxes.append(tuple(box))
            continue
        indices = atom[0]
        if len(indices) == 0 or np.size(indices[0]) == 0:
            continue
        boxes.append(tuple(slice(int(np.min(i)), int(np.max(i)) + 1) for i in indices))
    return [b for b in boxes if all(s.stop > s.start for s in b)]


def _padded(key: Sequence[Any], ndim: int) -> list[Any]:
    return [*key, *([slice(None)] * (ndim - len(key)))]


def units_meeting(boxes: Iterable[Box], unit: Sequence[int], shape: Sequence[int]) -> list[Box]:
    """The write units (clipped at the edge) that meet any of ``boxes``, row-major."""
    found: set[tuple[int, ...]] = set()
    for box in boxes:
        ranges = [range(s.start // u, -(-s.stop // u)) for s, u in zip(box, unit, strict=True)]
        found.update(itertools.product(*ranges))
    return [
        tuple(
            slice(i * u, min((i + 1) * u, n)) for i, u, n in zip(index, unit, shape, strict=True)
        )
        for index in sorted(found)
    ]


def _intersect(a: Box, b: Box) -> Box | None:
    box = tuple(
        slice(max(x.start, y.start), min(x.stop, y.stop)) for x, y in zip(a, b, strict=True)
    )
    return box if all(s.stop > s.start for s in box) else None


def _shift(box: Box, by: Sequence[int]) -> Box:
    return tuple(slice(s.start - o, s.stop - o) for s, o in zip(box, by, strict=True))


@dataclass
class LabelEdits:
    """One Labels layer's edits of a label image's level 0.

    ``painted`` holds every region painted (layer data boxes) since the layer was made;
    ``unwritten`` whether a paint came since the last :meth:`write`; ``to_update`` the
    level-0 regions written and not yet refreshed in the pyramid.
    """

    layer: Any
    target: EditTarget
    painted: list[Box] = field(default_factory=list)
    unwritten: bool = False
    to_update: list[Box] = field(default_factory=list)

    def record(self, atoms: Iterable[Any]) -> list[Box]:
        """Remember the regions a ``paint`` event's atoms changed; returns them."""
        boxes = painted_boxes(atoms, self.layer.data.shape)
        for box in boxes:
            if box not in self.painted:
                self.painted.append(box)
        self.unwritten = self.unwritten or bool(boxes)
        return boxes

    def write(self) -> list[Box]:
        """Write the layer's painted pixels that differ from level 0, unit by unit.

        Each write unit meeting a painted region is read, the layer's painted pixels laid
        over it, and written back whole if anything differs (an undo included). Returns the
        level-0 boxes that changed (the bounding box of the differing pixels per unit).
        """
        image = open_image(self.target.root)
        info = image.level0
        array = open_level_array(image.store, info.path, info)
        painted = [self.target.to_level0(b) for b in self.painted]
        extent = self.target.to_level0(tuple(slice(0, n) for n in self.layer.data.shape))
        changed = []
        for unit in units_meeting(painted, array.write_unit, info.shape):
            on_disk = array.read(unit)
            merged = on_disk.copy()
            for box in painted:
                inside = _intersect(box, unit)
                if inside is None or _intersect(inside, extent) is None:
                    continue
                inside = _intersect(inside, extent)
                assert inside is not None
                merged[_shift(inside, [u.start for u in unit])] = self._layer_values(inside)
            differs = merged != on_disk
            if not differs.any():
                continue
            array.write(unit, merged, write_empty=False)
            where = np.nonzero(differs)
            changed.append(
                tuple(
                    slice(u.start + int(w.min()), u.start + int(w.max()) + 1)
                    for u, w in zip(unit, where, strict=True)
                )
            )
        self.unwritten = False
        self.to_update.extend(changed)
        return changed

    def _layer_values(self, level0_box: Box) -> np.ndarray:
        """The layer's pixels of a level-0 box (within its extent), shaped as level 0."""
        box = list(level0_box)
        if self.target.squeezed is not None:
            del box[self.target.squeezed]
        local = _shift(tuple(box), self.target.origin)
        values = np.asarray(self.layer.data[local])
        if self.target.squeezed is not None:
            values = np.expand_dims(values, self.target.squeezed)
        return values

    def differs_from_disk(self) -> bool:
        """Whether a painted pixel of the layer differs from level 0 (e.g. after an undo)."""
        if not self.painted:
            return False
        image = open_image(self.target.root)
        info = image.level0
        array = open_level_array(image.store, info.path, info)
        extent = self.target.to_level0(tuple(slice(0, n) for n in self.layer.data.shape))
        for box in self.painted:
            inside = _intersect(self.target.to_level0(box), extent)
            if inside is not None and (array.read(inside) != self._layer_values(inside)).any():
                return True
        return False


def level0_changed(root: str | Path) -> bool | None:
    """Whether level 0 changed since its pyramid was last built or updated.

    From the change record the build left (a listing of level 0's units, no data read);
    None when there is no record to tell (a pyramid built by another tool or version).
    """
    try:
        image = open_image(root)
    except PyramidError:
        return None
    return update.level0_changed(image)


def edit_region(
    shape: Sequence[int],
    point: Sequence[float],
    displayed: Sequence[int],
    view: Box | None = None,
    max_pixels: int = MAX_EDIT_PIXELS,
) -> Box:
    """The level-0 region "Edit labels" takes (layer axes): the plane at ``point`` (level-0
    data coordinates) along the displayed axes, or the ``view`` box when the plane is
    larger than ``max_pixels``."""
    box = []
    for axis, n in enumerate(shape):
        if axis in displayed:
            box.append(slice(0, n))
        else:
            i = min(max(round(float(point[axis])), 0), n - 1)
            box.append(slice(i, i + 1))
    if view is not None and np.prod([s.stop - s.start for s in box]) > max_pixels:
        for axis in displayed:
            v = view[axis]
            start, stop = max(0, v.start), min(shape[axis], v.stop)
            if stop > start:
                box[axis] = slice(start, stop)
    return tuple(box)


def edit_layer_data(
    image: OmeZarrImage,
    level0: Any,
    box: Box,
    name: str,
    scale: Sequence[float],
    translate: Sequence[float],
    axis_labels: Sequence[str] | None = None,
) -> tuple[np.ndarray, dict[str, Any], str]:
    """A plain (data, kwargs, "labels") tuple holding ``box`` of level 0 as a numpy array,
    placed where the multiscale layer shows it, tagged with :data:`EDIT_KEY`."""
    origin = [s.start for s in box]
    data = np.asarray(level0[box])
    kwargs: dict[str, Any] = {
        "name": f"{name} (editing level 0)",
        "scale": list(scale),
        "translate": [t + o * s for t, o, s in zip(translate, origin, scale, strict=True)],
        "metadata": {
            EDIT_KEY: {
                "root": str(image.root),
                "origin": origin,
                "squeezed": _squeezed_axis(image),
            },
            CHANNEL_KEY: None,
        },
    }
    if axis_labels is not None:
        kwargs["axis_labels"] = list(axis_labels)
    return data, kwargs, "labels"
