"""The preview: a planned pyramid as multiscale layers over the layers of its image.

Nothing is written. The levels are :class:`~.preview_tiles.TiledLevel` arrays, computed
tile by tile in background threads (coarse levels first) so that napari never waits for
them. While a preview is on show its source layers are hidden; deleting a preview layer
gives its own source back. What the user set on a preview layer (contrast, colours, gamma,
opacity) carries over to the next preview and, after a build, to the built layer. Qt-free:
it needs only napari's layer list.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import numpy as np
from napari.components import LayerList
from napari.layers import Labels, Layer
from psygnal import Signal

from ..ome.image import OmeZarrImage
from ..options import BuildOptions
from ..pyramid.plan import choose_method, level_factors, level_shapes, num_levels_for
from ..system import lower_thread_priority
from .layers import CHANNEL_KEY, PREVIEW_KEY, LayerData, image_layers, labels_layer
from .picker import channel_of, source_layers
from .preview_tiles import TilePyramid

# What a user may have changed on a layer and expects to keep on its preview and its reload.
_COMMON_STATE = ("name", "visible", "opacity", "blending", "scale", "translate")
_IMAGE_STATE = ("colormap", "contrast_limits", "gamma")
# What carries over from a preview layer to the next preview and to the built layer.
_LOOK = ("visible", "opacity", "blending", *_IMAGE_STATE)


def display_state(layer: Layer) -> dict[str, Any]:
    """How ``layer`` looks, as keyword arguments for a layer that replaces it."""
    names = _COMMON_STATE + (() if isinstance(layer, Labels) else _IMAGE_STATE)
    return {name: getattr(layer, name) for name in names if hasattr(layer, name)}


def look_of(layer: Layer) -> dict[str, Any]:
    """What the user set on how ``layer`` looks (not its name, data or place)."""
    names = [n for n in _LOOK if not (isinstance(layer, Labels) and n in _IMAGE_STATE)]
    return {name: getattr(layer, name) for name in names if hasattr(layer, name)}


def give_look(layer: Layer, look: dict[str, Any]) -> None:
    """Set ``look`` (from :func:`look_of`, or a visibility alone) on ``layer``."""
    for name, value in look.items():
        setattr(layer, name, value)


@contextmanager
def batched_removal(layers: LayerList) -> Iterator[None]:
    """Remove several layers with one redraw of napari's scene (older napari: one each).

    Each removal otherwise runs napari's full garbage collection and rebuilds its scene
    graph, about 0.15 s on a big session; a batch does both once, at its end.
    """
    batched_update = getattr(layers, "batched_update", None)  # not in every napari
    if batched_update is None:
        yield
        return
    with batched_update():
        yield


def tile_pyramid(
    image: OmeZarrImage,
    options: BuildOptions,
    executor: Executor,
    on_ready: Callable[[], None] = lambda: None,
    arrays: tuple[Any, Any] | None = None,
) -> TilePyramid:
    """The levels ``options`` plan for ``image``, computed in ``executor`` as napari asks.

    ``arrays`` are level 0 as napari reads it and as the tiles read it, from an earlier
    preview of the same image (see :func:`level0_arrays`); None opens them.

    Raises
    ------
    PyramidError
        If no pyramid can be planned.
    """
    _, aggregation = choose_method(image, options)
    factors = level_factors(image, options)
    count = num_levels_for(image, options, factors)
    shapes = level_shapes(image, count, factors, options.edge)
    level0, reader = level0_arrays(image) if arrays is None else arrays
    return TilePyramid(
        level0,
        shapes,
        factors,
        aggregation,
        options.edge,
        image.yx_axes,
        executor,
        on_ready,
        source=(str(image.root), image.level0.path),
        reader=reader,
    )


def level0_arrays(image: OmeZarrImage) -> tuple[Any, StoredReader | UncachedReader]:
    """Level 0 twice: the array napari reads, and the reader the tiles are computed from.

    A sample whose chunks are still being written is read as it is computed.
    """
    from ..storage import open_level
    from .sample_data import sample_level0

    level0 = sample_level0(image.root)
    if level0 is not None:
        return level0, UncachedReader(sample_level0(image.root))
    # The tiles read the store themselves: napari's dask cache must not see their reads.
    return open_level(image, image.level0.path), StoredReader(image)


class StoredReader:
    """Level 0 of a stored image, read unit by unit from its store, as the engine reads it.

    No dask: each computation of a dask graph leaves reference cycles (its ordering's
    closures) that only Python's full garbage collection frees; hundreds of reads per
    setting change made one of those (0.15 s, holding napari's thread) land inside it.
    """

    def __init__(self, image: OmeZarrImage) -> None:
        from ..storage import open_level_array

        self.array = open_level_array(image.store, image.level0.path, image.level0)
        self.shape, self.dtype = self.array.shape, self.array.dtype

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        from ..storage import read_sampled

        return read_sampled(self.array, key)


class UncachedReader:
    """A dask array read in the calling thread, out of reach of dask's global callbacks.

    napari registers a :class:`dask.cache.Cache` for every computation, and it is not
    thread-safe: a computation ending in one thread clears the start times of one running in
    another, which then fails with a KeyError (in napari's thread, on a layer it was
    drawing). Tiles are computed in worker threads while napari computes on its own, so they
    compute with no callbacks at all, on the thread that asked.
    """

    def __init__(self, array: Any) -> None:
        self.array = array
        self.shape, self.dtype = array.shape, array.dtype

    def __getitem__(self, key: Any) -> np.ndarray:
        from dask.local import get_sync

        # The scheduler as a function: dask looks for a distributed client (importing
        # distributed, 0.65 s) whenever a scheduler is named by a string.
        return np.asarray(self.array[key].compute(scheduler=get_sync, callbacks=()))


class PreviewLayers:
    """The preview layers on show in a viewer, and the layers they hide.

    ``updated`` is emitted whenever preview layers were placed, replaced or removed;
    ``tiles_ready`` (from a worker thread) when computed tiles are there to be shown.
    ``executor`` computes the tiles (default: threads, one core left to napari).
    """

    updated = Signal()
    tiles_ready = Signal()

    def __init__(self, layers: LayerList, executor: Executor | None = None) -> None:
        self._layers = layers
        self.executor = executor
        self._own_executor: Executor | None = None
        self.pyramid: TilePyramid | None = None
        # The image of the preview on show and its level-0 arrays, reused while it is the
        # same image (opening them again is a read of level 0's metadata on napari's thread).
        self._arrays: tuple[OmeZarrImage, tuple[Any, Any]] | None = None
        # (preview layer, its source, the source's visibility before the preview)
        self._shown: list[tuple[Layer, Layer, bool]] = []
        layers.events.removed.connect(self._on_removed)

    @property
    def layers(self) -> tuple[Layer, ...]:
        """The preview layers on show (empty if none)."""
        return tuple(preview for preview, _, _ in self._shown)

    def show(self, image: OmeZarrImage, options: BuildOptions) -> list[Any]:
        """Show (or replace) the pyramid ``options`` plan for ``image``; return its levels.

        Raises
        ------
        PyramidError
            If no pyramid can be planned; the layers are then left as they were.
        """
        pyramid = tile_pyramid(
            image, options, self._executor(), self.tiles_ready.emit, self._level0(image)
        )
        if self.pyramid is not None:
            pyramid.adopt(self.pyramid)  # what the new settings share is not computed again
        levels = pyramid.levels
        if image.is_label:
            planned: list[LayerData] = [labels_layer(image, levels)]
        else:
            planned = image_layers(image, levels)
        sources = source_layers(self._layers, image.root)
        chosen = [
            planned[min(channel_of(source, position), len(planned) - 1)]
            for position, source in enumerate(sources)
        ]
        shown = [(source, preview._type_string) for preview, source, _ in self._shown]
        if shown == [(source, kind) for source, (_, _, kind) in zip(sources, chosen, strict=True)]:
            self._swap(pyramid, [data for data, _, _ in chosen])
            return levels
        before = {id(source): (preview, visible) for preview, source, visible in self._shown}
        self._drop()
        self.pyramid = pyramid
        top = max(self._layers.index(layer) for layer in sources) + 1
        for position, (source, (data, kwargs, kind)) in enumerate(
            zip(sources, chosen, strict=True)
        ):
            kwargs = {**kwargs, **display_state(source)}
            kwargs["name"] = f"{source.name} (preview)"
            kwargs["metadata"] = {PREVIEW_KEY: str(image.root), CHANNEL_KEY: position}
            previous, visible = before.get(id(source), (None, source.visible))
            if previous is not None:  # a replaced preview: the user's look carries over
                kwargs.update(look_of(previous))
            layer = Layer.create(data, kwargs, kind)
            self._layers.insert(top, layer)
            top += 1
            self._shown.append((layer, source, visible))
        for _, source, _ in self._shown:
            source.visible = False
        self.updated.emit()
        return levels

    def _level0(self, image: OmeZarrImage) -> tuple[Any, Any]:
        """Level 0's arrays for ``image``: the preview's own if it shows the same image.

        ``image`` is the same object only while its metadata is unchanged (the widget's
        :class:`~.image_cache.ImageCache`); a sample still being written is opened afresh.
        """
        from .sample_data import sample_level0

        if self._arrays is not None and self._arrays[0] is image:
            return self._arrays[1]
        arrays = level0_arrays(image)
        if sample_level0(image.root) is None:
            self._arrays = (image, arrays)
        return arrays

    def _swap(self, pyramid: TilePyramid, data: list[Any]) -> None:
        """Show new levels in the preview layers on show: a data change, not a new layer
        (adding and removing napari layers stalls the viewer for up to a second)."""
        if self.pyramid is not None:
            self.pyramid.close()
        self.pyramid = pyramid
        for (preview, _, _), levels in zip(self._shown, data, strict=True):
            preview.data = levels if isinstance(levels, list) else [levels]
        self.updated.emit()

    def remove(
        self, restore: bool = True, keep_look: bool = False
    ) -> list[tuple[Layer, dict[str, Any]]]:
        """Remove the preview layers; ``restore`` the layers they hid, with the preview's
        look if ``keep_look`` (the built image shows as its preview did).

        Returns each hidden layer with the look it gets back (given already if ``restore``).
        A caller that changes their data first gives it after (:func:`give_look`): napari
        draws a hidden layer only once it is shown again, so their old data is not drawn.
        """
        shown = self._drop()
        self._arrays = None
        looks = [
            (source, look_of(preview) if keep_look else {"visible": visible})
            for preview, source, visible in shown
        ]
        for source, look in looks:
            if restore and source in self._layers:
                give_look(source, look)
        if shown:
            self.updated.emit()
        return looks

    def close(self) -> None:
        """Remove the preview and stop its threads."""
        self.remove()
        if self._own_executor is not None:
            self._own_executor.shutdown(wait=False, cancel_futures=True)
            self._own_executor = None

    def _executor(self) -> Executor:
        if self.executor is not None:
            return self.executor
        if self._own_executor is None:
            # One thread, below napari's priority: the viewer stays responsive on a loaded
            # machine, and tiles come coarse level first anyway.
            self._own_executor = ThreadPoolExecutor(
                1, thread_name_prefix="pyramid-preview", initializer=lower_thread_priority
            )
        return self._own_executor

    def _drop(self) -> list[tuple[Layer, Layer, bool]]:
        """Take the preview layers out of the viewer and stop computing their tiles."""
        shown, self._shown = self._shown, []
        if self.pyramid is not None:
            self.pyramid.close()
            self.pyramid = None
        gone = [preview for preview, _, _ in shown if preview in self._layers]
        if gone:  # an empty batch would still collect garbage and rebuild napari's scene
            with batched_removal(self._layers):
                for preview in gone:
                    self._layers.remove(preview)
        return shown

    def _on_removed(self, event: Any) -> None:
        layer = event.value
        for entry in self._shown:
            if entry[0] is layer:  # deleted by the user: its own source comes back
                self._shown.remove(entry)
                _, source, visible = entry
                if source in self._layers:
                    source.visible = visible
                if not self._shown and self.pyramid is not None:
                    self.pyramid.close()
                    self.pyramid = None
                self.updated.emit()
                return
