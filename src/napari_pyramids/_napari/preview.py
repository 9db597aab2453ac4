"""The preview: a planned pyramid as lazy multiscale layers over the layers of its image.

Nothing is written. While a preview is on show its source layers are hidden; they get
their visibility back when the preview is removed, by the widget or by deleting the
preview layers. Qt-free: it needs only napari's layer list.
"""

from __future__ import annotations

from typing import Any

import dask.array as da
from napari.components import LayerList
from napari.layers import Labels, Layer
from psygnal import Signal

from ..api import preview_pyramid
from ..ome.image import OmeZarrImage
from ..options import BuildOptions
from .layers import CHANNEL_KEY, PREVIEW_KEY, LayerData, image_layers, labels_layer
from .picker import channel_of, source_layers

# What a user may have changed on a layer and expects to keep on its preview and its reload.
_COMMON_STATE = ("name", "visible", "opacity", "blending", "scale", "translate")
_IMAGE_STATE = ("colormap", "contrast_limits", "gamma")


def display_state(layer: Layer) -> dict[str, Any]:
    """How ``layer`` looks, as keyword arguments for a layer that replaces it."""
    names = _COMMON_STATE + (() if isinstance(layer, Labels) else _IMAGE_STATE)
    return {name: getattr(layer, name) for name in names if hasattr(layer, name)}


class PreviewLayers:
    """The preview layers on show in a viewer, and the visibility of the layers they hide.

    ``updated`` is emitted whenever preview layers were placed, replaced or removed.
    """

    updated = Signal()

    def __init__(self, layers: LayerList) -> None:
        self._layers = layers
        self._shown: list[Layer] = []
        self._hidden: list[tuple[Layer, bool]] = []
        layers.events.removed.connect(self._on_removed)

    @property
    def layers(self) -> tuple[Layer, ...]:
        """The preview layers on show (empty if none)."""
        return tuple(self._shown)

    def show(self, image: OmeZarrImage, options: BuildOptions) -> list[da.Array]:
        """Show (or replace) the pyramid ``options`` plan for ``image``; return its levels.

        Raises
        ------
        PyramidError
            If no pyramid can be planned; the layers are then left as they were.
        """
        levels = preview_pyramid(image, options)
        if image.is_label:
            planned: list[LayerData] = [labels_layer(image, levels)]
        else:
            planned = image_layers(image, levels)
        sources = source_layers(self._layers, image.root)
        self.remove(restore=False)
        top = max(self._layers.index(layer) for layer in sources) + 1
        hidden = {id(layer): visible for layer, visible in self._hidden}
        for position, source in enumerate(sources):
            data, kwargs, kind = planned[min(channel_of(source, position), len(planned) - 1)]
            kwargs = {**kwargs, **display_state(source)}
            kwargs["name"] = f"{source.name} (preview)"
            kwargs["metadata"] = {PREVIEW_KEY: str(image.root), CHANNEL_KEY: position}
            if id(source) in hidden:  # a replaced preview: the source is hidden already
                kwargs["visible"] = hidden[id(source)]
            else:
                self._hidden.append((source, source.visible))
            layer = Layer.create(data, kwargs, kind)
            self._layers.insert(top, layer)
            top += 1
            self._shown.append(layer)
        for source, _visible in self._hidden:
            source.visible = False
        self.updated.emit()
        return levels

    def remove(self, restore: bool = True) -> None:
        """Remove the preview layers; ``restore`` the visibility of the layers they hid."""
        layers, self._shown = self._shown, []
        for layer in layers:
            if layer in self._layers:
                self._layers.remove(layer)
        if restore:
            self._restore_sources()
        if layers:
            self.updated.emit()

    def _restore_sources(self) -> None:
        for layer, visible in self._hidden:
            if layer in self._layers:
                layer.visible = visible
        self._hidden = []

    def _on_removed(self, event: Any) -> None:
        layer = event.value
        if layer in self._shown:  # deleted by the user: the last one gives the sources back
            self._shown.remove(layer)
            if not self._shown:
                self._restore_sources()
                self.updated.emit()
