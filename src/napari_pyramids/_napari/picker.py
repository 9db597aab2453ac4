"""Which loaded layers show an OME-Zarr image on disk, grouped by image, kept up to date.

The layer picker of the Pyramid Builder, without its combo box: the widget owns the control
and reads :meth:`LayerPicker.choices` through it. Qt-free: it needs only napari's layer list.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from napari.components import LayerList
from napari.layers import Labels, Layer
from psygnal import Signal

from ..datasets import Dataset
from ..errors import PyramidError, visible_text
from .dataset_texts import dataset_entry
from .layers import CHANNEL_KEY, EDIT_KEY, PREVIEW_KEY, image_path_of, layer_data
from .scope import Scope, dataset_scope, dataset_shown, image_scope
from .texts import listing_note

try:  # private in napari, stable since 0.4.16: gives layers read here their source path
    from napari.layers._source import layer_source
except ImportError:  # pragma: no cover
    import contextlib

    layer_source = contextlib.nullcontext  # type: ignore[assignment]


def image_root(layer: Layer) -> Path:
    """The image group ``layer`` shows; PyramidError says why it has none."""
    if PREVIEW_KEY in layer.metadata:
        raise PyramidError("a preview")
    return image_path_of(layer.metadata, layer.source.path, isinstance(layer, Labels), layer.name)


def root_or_none(layer: Layer | None) -> Path | None:
    """The image group ``layer`` shows, or None for no layer or a layer of no image."""
    if layer is None:
        return None
    try:
        return image_root(layer)
    except PyramidError:
        return None


def source_layers(layers: LayerList, root: Path) -> list[Layer]:
    """The layers showing the image at ``root``, bottom to top (previews excluded)."""
    return [layer for layer in layers if root_or_none(layer) == root]


def channel_of(layer: Layer, position: int) -> int:
    """The channel ``layer`` shows: as recorded by our reader, else its place among its image's."""
    channel = layer.metadata.get(CHANNEL_KEY)
    return channel if isinstance(channel, int) else position


def read_layers(path: str | os.PathLike[str]) -> list[Layer]:
    """The layers of the image at ``path``, made (level 0 read) but not added to a viewer.

    Raises
    ------
    PyramidError
        If the image is refused; making a layer reads level 0's first slice, so a crafted
        chunk fails here too, before any layer could be added.
    """
    planned = layer_data(path)
    with layer_source(path=os.fspath(path), reader_plugin="napari-pyramids"):
        return [Layer.create(data, kwargs, kind) for data, kwargs, kind in planned]


class LayerPicker:
    """The layers a build can start from, following the viewer's layer list.

    A layer of an image is listed by its name; a layer showing a whole plate, well or
    collection (napari-ome-zarr's tiled plate) by its name, the kind and its number of images.
    ``changed`` is emitted when a layer is added, removed or renamed: the choices may differ.
    """

    changed = Signal()

    def __init__(self, layers: LayerList) -> None:
        self._layers = layers
        self.note = ""
        # Finding a plate's images reads every well's and field's metadata: once per plate.
        self._datasets: dict[str, Dataset | None] = {}
        layers.events.inserted.connect(self._on_inserted)
        layers.events.removed.connect(self._on_removed)
        for layer in layers:
            layer.events.name.connect(self._on_renamed)

    def choices(self, *_: Any) -> list[tuple[str, Layer]]:
        """The (shown name, layer) entries, top layer first; :attr:`note` says what is left out."""
        listed, unlisted = [], []
        for layer in reversed(self._layers):
            try:
                image_root(layer)
            except PyramidError as exc:
                dataset = self.dataset_of(layer)
                if dataset is not None:
                    listed.append((visible_text(dataset_entry(layer.name, dataset)), layer))
                elif PREVIEW_KEY not in layer.metadata and EDIT_KEY not in layer.metadata:
                    unlisted.append((layer.name, str(exc)))
                continue
            listed.append((visible_text(layer.name), layer))
        self.note = listing_note(bool(listed), unlisted)
        return listed

    def dataset_of(self, layer: Layer) -> Dataset | None:
        """The plate, well or collection ``layer`` shows whole, or None."""
        if PREVIEW_KEY in layer.metadata or layer.source.path is None:
            return None
        return self.dataset_at(str(layer.source.path))

    def dataset_at(self, path: str | os.PathLike[str]) -> Dataset | None:
        """The plate, well or collection at ``path`` (read once), or None if it is not one."""
        key = str(path)
        if key not in self._datasets:
            self._datasets[key] = dataset_shown(key)
        return self._datasets[key]

    def scope(self, layer: Layer | None) -> Scope | None:
        """What a build from ``layer`` covers; None for no layer or a layer of no image.

        Raises
        ------
        PyramidError
            If the layer shows a dataset none of whose images can be read.
        """
        root = root_or_none(layer)
        if root is not None:
            return image_scope(root)
        dataset = self.dataset_of(layer) if layer is not None else None
        return dataset_scope(dataset) if dataset is not None else None

    def forget_datasets(self) -> None:
        """Read the datasets again next time (after a build changed them)."""
        self._datasets.clear()

    def _on_inserted(self, event: Any) -> None:
        event.value.events.name.connect(self._on_renamed)
        self.changed.emit()

    def _on_removed(self, event: Any) -> None:
        event.value.events.name.disconnect(self._on_renamed)
        self.changed.emit()

    def _on_renamed(self, *_: Any) -> None:
        self.changed.emit()
