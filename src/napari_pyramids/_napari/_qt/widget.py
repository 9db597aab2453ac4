"""The Pyramid Builder dock widget: pick a zarr layer, preview the pyramid, build it, reload.

Everything it decides comes from :mod:`napari_pyramids` (defaults, plans, refusals,
disk estimates, layer data); this module only wires controls, layers and the worker.
Text that may come from an image's metadata (layer names, paths, level names, errors) is
shown in plain-text labels and escaped in notifications, never interpreted as markup, with
invisible and control characters spelled out (:func:`visible_text`).

Tests and scripts drive it by name: set ``widget.num_levels.value``, click with
``widget.build.clicked()``, and wait on ``widget.events.build_finished`` (or on
``widget.worker.finished``).
"""

import html
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import napari
import napari.viewer
from dask.utils import format_bytes
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    SpinBox,
)
from napari.layers import Labels, Layer
from napari.utils import progress as napari_progress
from napari.utils.notifications import show_error, show_warning
from qtpy.QtCore import QObject, Qt, QTimer, Signal
from qtpy.QtWidgets import QSizePolicy

from ...api import preview_pyramid
from ...errors import PyramidError, visible_text
from ...estimate import compression_ratio, disk_estimate
from ...images import open_image
from ...ome.image import OmeZarrImage, read_array_info
from ...options import BuildOptions, parse_chunksize
from ...pyramid.methods import METHODS
from ...pyramid.reduce import EDGES
from ...system import cpu_count
from ..layers import (
    CHANNEL_KEY,
    PATH_KEY,
    PREVIEW_KEY,
    LayerData,
    image_layers,
    image_path_of,
    labels_layer,
    layer_data,
)
from ..request import default_request, plan_request
from .worker import BuildWorker, build_worker

try:  # private in napari, stable since 0.4.16: gives reloaded layers their source path
    from napari.layers._source import layer_source
except ImportError:  # pragma: no cover
    import contextlib

    layer_source = contextlib.nullcontext  # type: ignore[assignment]

DEBOUNCE_MS = 300
PROGRESS_MS = 200
NO_LAYER = (
    "No layer from an OME-Zarr image on disk is loaded: open one with File > Open "
    "(reader napari-pyramids) or load File > Open Sample > napari-pyramids."
)
_IMAGE_STATE = ("colormap", "contrast_limits", "gamma")
_COMMON_STATE = ("name", "visible", "opacity", "blending", "scale", "translate")


class BuilderEvents(QObject):
    """Qt signals of the widget, for tests and scripts (``qtbot.waitSignal``)."""

    preview_updated = Signal()  # the preview layers were placed, replaced or removed
    build_finished = Signal(str)  # "built", "cancelled" or "failed", after the layers changed
    refused = Signal(str)  # a click was refused; the message


def notification_text(text: str) -> str:
    """``text`` as one line that a napari notification shows literally.

    Notifications are Qt labels in auto-detect mode: Qt renders a line as rich text if it
    sees a tag or an ``&lt;`` in it. Such a line is HTML-escaped and marked as rich text
    itself, whitespace kept, so Qt shows exactly the original characters.
    """
    line = visible_text(" ".join(text.split("\n")))
    if not Qt.mightBeRichText(line):
        return line
    return '<span style="white-space: pre-wrap">' + html.escape(line, quote=False) + "</span>"


def describe_on_disk(image: OmeZarrImage) -> str:
    """The picked image in a few plain lines: where, what, and the levels it has."""
    level0 = image.level0
    shape = "×".join(str(n) for n in level0.shape)
    names = [visible_text(a.name) for a in image.axes]
    axes = "".join(names) if all(len(n) == 1 for n in names) else ",".join(names)
    kind = "labels" if image.is_label else "image"
    sizes = []
    for path in image.level_paths:
        try:
            info = read_array_info(image.store, path, image.zarr_format)
            sizes.append("×".join(str(info.shape[i]) for i in image.yx_axes))
        except PyramidError:
            sizes.append("missing")
    return (
        f"{visible_text(str(image.root))}\n{kind}: {axes} {shape} {level0.dtype}, "
        f"zarr v{image.zarr_format} / NGFF {image.ngff_version}\n"
        f"on disk: {len(sizes)} level(s) ({', '.join(sizes)})"
    )


def _plain_label(name: str, label: str = "") -> Label:
    widget = Label(name=name, label=label, value="")
    widget.native.setTextFormat(Qt.TextFormat.PlainText)
    widget.native.setWordWrap(True)
    widget.native.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
    # Never squeezed below the wrapped text's height: a clipped refusal explains nothing.
    widget.native.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Minimum)
    widget.native.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return widget


class PyramidBuilder(Container):
    """Build the pyramid of a zarr layer's image in place, with a live preview.

    Attributes
    ----------
    events : BuilderEvents
        ``preview_updated``, ``build_finished(outcome)`` and ``refused(message)``.
    worker : BuildWorker or None
        The running (or last) build's thread worker.
    memory_budget, workers, executor
        Passed to the engine; None uses its defaults (256 MiB, the CPU cores, threads).
        ``workers`` starts at the CPU cores less one, left to napari.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        controls = [
            ComboBox(name="image", label="image", choices=self._layer_choices),
            _plain_label("info"),
            SpinBox(name="num_levels", label="levels", min=1, max=32, value=1),
            SpinBox(name="coarsening_xy", label="factor Y/X", min=2, max=16, value=2),
            SpinBox(name="coarsening_z", label="factor Z", min=1, max=16, value=1),
            ComboBox(name="method", label="method", choices=METHODS, value="mean"),
            LineEdit(name="chunksize", label="chunks", value=""),
            ComboBox(name="edge", label="edges", choices=EDGES, value="trim"),
            CheckBox(name="overwrite", label="", text="overwrite existing levels", value=False),
            _plain_label("summary"),
            PushButton(name="preview", label="", text="Preview"),
            PushButton(name="build", label="", text="Build pyramid"),
            PushButton(name="cancel", label="", text="Cancel", enabled=False),
            ProgressBar(name="progress", label="", min=0, max=1, value=0),
            _plain_label("status"),
        ]
        super().__init__(widgets=controls, labels=True)
        for name in ("info", "summary", "progress", "status"):
            # Full-width rows: their content says what they are.
            self[name]._labeled_widget()._label_widget.visible = False
        self.events = BuilderEvents()
        self.worker: BuildWorker | None = None
        self.memory_budget: int | str | None = None
        # One core is left to napari: the UI stays responsive while the build runs.
        self.workers: int | None = max(1, cpu_count() - 1)
        self.executor: Any = None
        self._viewer = viewer
        self._root: Path | None = None
        self._build_root: Path | None = None
        self._ratios: dict[Path, float | None] = {}
        self._preview_layers: list[Layer] = []
        self._hidden: list[tuple[Layer, bool]] = []
        self._quiet = False
        self._pbar: napari_progress | None = None
        self._error: BaseException | None = None
        self._layers_note = ""
        self._debounce = QTimer()
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(DEBOUNCE_MS)
        self._debounce.timeout.connect(self._refresh_preview)
        self._step: Any = None
        self._progress_timer = QTimer()
        self._progress_timer.setSingleShot(True)
        self._progress_timer.setInterval(PROGRESS_MS)
        self._progress_timer.timeout.connect(self._show_progress)
        self.chunksize.native.setPlaceholderText("blank: same as level 0")

        self.image.changed.connect(self._on_image_changed)
        for name in ("num_levels", "coarsening_xy", "coarsening_z", "method", "chunksize"):
            self[name].changed.connect(self._on_parameter_changed)
        self.edge.changed.connect(self._on_parameter_changed)
        self.overwrite.changed.connect(self._update_plan)
        self.preview.clicked.connect(self.show_preview)
        self.build.clicked.connect(self.start_build)
        self.cancel.clicked.connect(self.cancel_build)
        viewer.layers.events.inserted.connect(self._on_layer_inserted)
        viewer.layers.events.removed.connect(self._on_layer_removed)
        for layer in viewer.layers:
            layer.events.name.connect(self._refresh_choices)
        self._refresh_choices()

    # ----------------------------------------------------------------- the layer picker
    def image_root(self, layer: Layer) -> Path:
        """The image group ``layer`` shows; PyramidError says why it has none."""
        if PREVIEW_KEY in layer.metadata:
            raise PyramidError("a preview")
        return image_path_of(
            layer.metadata, layer.source.path, isinstance(layer, Labels), layer.name
        )

    def _on_layer_inserted(self, event: Any) -> None:
        event.value.events.name.connect(self._refresh_choices)
        self._refresh_choices()

    def _on_layer_removed(self, event: Any) -> None:
        layer = event.value
        if layer in self._preview_layers:
            self._preview_layers.remove(layer)
            if not self._preview_layers:
                self._restore_sources()
                self.events.preview_updated.emit()
        self._refresh_choices()

    def _layer_choices(self, *_: Any) -> list[tuple[str, Layer]]:
        """The picker's entries (napari re-reads them through ``reset_choices``)."""
        viewer = getattr(self, "_viewer", None)
        choices, others = [], []
        for layer in reversed(viewer.layers if viewer is not None else []):
            try:
                self.image_root(layer)
            except PyramidError as exc:
                if PREVIEW_KEY not in layer.metadata:
                    others.append(f"{layer.name!r} ({exc})")
                continue
            choices.append((visible_text(layer.name), layer))
        notes = [] if choices else [NO_LAYER]
        if others:
            more = f"; and {len(others) - 5} more" if len(others) > 5 else ""
            notes.append(
                "Not listed, not from an OME-Zarr image on disk: " + "; ".join(others[:5]) + more
            )
        self._layers_note = "\n".join(notes)
        return choices

    def _refresh_choices(self, *_: Any) -> None:
        if self._quiet:
            return
        self.image.reset_choices()
        self._on_image_changed()

    def _on_image_changed(self, *_: Any) -> None:
        if self._quiet:
            return
        layer = self.image.value
        try:
            root = self.image_root(layer) if layer is not None else None
        except PyramidError:
            root = None
        if root != self._root:
            self._root = root
            self._remove_preview()
            if root is not None:
                try:
                    self._set_request(default_request(open_image(root)))
                except PyramidError as exc:
                    self._say(str(exc))
        self._update_plan()

    def _set_request(self, request: BuildOptions) -> None:
        self._quiet = True
        try:
            self.num_levels.value = request.num_levels
            self.coarsening_xy.value = request.coarsening_xy
            self.coarsening_z.value = request.coarsening_z
            self.method.value = request.method or "mean"
            self.chunksize.value = ""
            self.edge.value = request.edge
            self.overwrite.value = request.overwrite
        finally:
            self._quiet = False

    def open_path(self, path: str | os.PathLike[str]) -> list[Layer]:
        """Open the image at ``path`` with our reader and pick it; refuse clearly if unreadable.

        Returns the layers added (none if the image was refused).
        """
        try:
            planned = layer_data(path)
            # Making a layer reads level 0 (its first slice): a crafted chunk fails here, so
            # every layer is made before any is added, and a failure adds none.
            with layer_source(path=os.fspath(path), reader_plugin="napari-pyramids"):
                made = [Layer.create(data, kwargs, kind) for data, kwargs, kind in planned]
        except PyramidError as exc:
            self._refuse(str(exc))
            return []
        for layer in made:
            self._viewer.add_layer(layer)
        self.image.value = made[0]
        return made

    # ----------------------------------------------------------------- plan and summary
    def request(self, image: OmeZarrImage) -> BuildOptions:
        """The controls' values (and the engine attributes) as the options of a build."""
        return BuildOptions(
            num_levels=self.num_levels.value,
            coarsening_xy=self.coarsening_xy.value,
            coarsening_z=self.coarsening_z.value,
            method=self.method.value,
            chunksize=parse_chunksize(self.chunksize.value, image),
            edge=self.edge.value,
            overwrite=self.overwrite.value,
            memory_budget=self.memory_budget,
            workers=self.workers,
        )

    def _on_parameter_changed(self, *_: Any) -> None:
        if self._quiet:
            return
        self._update_plan()
        if self._preview_layers:
            self._debounce.start()

    def _update_plan(self, *_: Any) -> None:
        if self._quiet:
            return
        if self._root is None:
            self.info.value = self._layers_note
            self.summary.value = ""
            return
        try:
            image = open_image(self._root)
        except PyramidError as exc:
            self.info.value, self.summary.value = self._layers_note, ""
            self._say(str(exc))
            return
        self.info.value = "\n".join(
            filter(
                None, [describe_on_disk(image), self._layers_note if self.image.choices else ""]
            )
        )
        try:
            plan = plan_request(image, self.request(image))
        except PyramidError as exc:
            self.summary.value = visible_text(f"Nothing to build as set: {exc}")
            self._say(str(exc))
            return
        if image.root not in self._ratios:  # walking level 0's chunks once per image is enough
            self._ratios[image.root] = compression_ratio(image)
        self.summary.value = self._describe(plan, self._ratios[image.root])
        if self.worker is None or not self.worker.is_running:
            self._say("Ready: Preview shows the pyramid without writing anything.")

    @staticmethod
    def _describe(plan: Any, ratio: float | None) -> str:
        lines = []
        for level in plan.levels:
            shape = "×".join(str(n) for n in level.shape)
            lines.append(f"level {level.index} ({level.path}): {shape}")
        estimate = disk_estimate(plan, ratio if ratio is not None else 1.0)
        ratio_text = f"level 0 stores 1:{1 / ratio:.1f}" if ratio else "uncompressed"
        text = f"needs ~{format_bytes(estimate.stored_bytes)} on disk ({ratio_text})"
        if estimate.free_bytes is not None:
            text += f", {format_bytes(estimate.free_bytes)} free"
            if not estimate.fits:
                text += " - NOT ENOUGH SPACE"
        lines.append(text)
        return "\n".join(lines)

    # ----------------------------------------------------------------- preview
    def _source_layers(self, root: Path) -> list[Layer]:
        sources = []
        for layer in self._viewer.layers:
            try:
                if self.image_root(layer) == root:
                    sources.append(layer)
            except PyramidError:
                continue
        return sources

    @staticmethod
    def _channel_of(layer: Layer, position: int) -> int:
        channel = layer.metadata.get(CHANNEL_KEY)
        return channel if isinstance(channel, int) else position

    def show_preview(self, *_: Any) -> None:
        """Show (or replace) the planned pyramid as lazy multiscale layers over the source."""
        self._debounce.stop()
        if self._root is None:
            self._refuse(NO_LAYER)
            return
        try:
            image = open_image(self._root)
            request = self.request(image)
            levels = preview_pyramid(image, request)
        except PyramidError as exc:
            self._remove_preview()
            self._refuse(str(exc))
            return
        if image.is_label:
            planned: list[LayerData] = [labels_layer(image, levels)]
        else:
            planned = image_layers(image, levels)
        sources = self._source_layers(image.root)
        self._remove_preview(restore=False)
        top = max(self._viewer.layers.index(layer) for layer in sources) + 1
        hidden = {id(layer): visible for layer, visible in self._hidden}
        for position, source in enumerate(sources):
            data, kwargs, kind = planned[min(self._channel_of(source, position), len(planned) - 1)]
            kwargs = {**kwargs, **self._display_state(source)}
            kwargs["name"] = f"{source.name} (preview)"
            kwargs["metadata"] = {PREVIEW_KEY: str(image.root), CHANNEL_KEY: position}
            if id(source) not in hidden:
                self._hidden.append((source, source.visible))
            else:
                kwargs["visible"] = hidden[id(source)]
            layer = Layer.create(data, kwargs, kind)
            self._viewer.layers.insert(top, layer)
            top += 1
            self._preview_layers.append(layer)
        for source, _visible in self._hidden:
            source.visible = False
        shapes = ", ".join("×".join(map(str, lv.shape[-2:])) for lv in levels)
        self._say(
            f"Preview of {len(levels)} levels ({shapes}); nothing is written. Delete the "
            "preview layer to see the source again."
        )
        self.events.preview_updated.emit()

    def _refresh_preview(self) -> None:
        if self._preview_layers:
            self.show_preview()

    @staticmethod
    def _display_state(layer: Layer) -> dict[str, Any]:
        names = _COMMON_STATE + (() if isinstance(layer, Labels) else _IMAGE_STATE)
        return {name: getattr(layer, name) for name in names if hasattr(layer, name)}

    def _remove_preview(self, restore: bool = True) -> None:
        layers, self._preview_layers = self._preview_layers, []
        for layer in layers:
            if layer in self._viewer.layers:
                self._viewer.layers.remove(layer)
        if restore:
            self._restore_sources()
        if layers:
            self.events.preview_updated.emit()

    def _restore_sources(self) -> None:
        for layer, visible in self._hidden:
            if layer in self._viewer.layers:
                layer.visible = visible
        self._hidden = []

    @property
    def preview_layers(self) -> Sequence[Layer]:
        """The preview layers on show (empty if none)."""
        return tuple(self._preview_layers)

    # ----------------------------------------------------------------- build
    def start_build(self, *_: Any) -> None:
        """Check the request, then build in a thread worker; refuse clearly if it cannot."""
        if self.worker is not None and self.worker.is_running:
            self._refuse("A build is already running; wait for it or cancel it.")
            return
        if self._root is None:
            self._refuse(NO_LAYER)
            return
        try:
            image = open_image(self._root)
            request = self.request(image)
            plan = plan_request(image, request)
        except PyramidError as exc:
            self._refuse(str(exc))
            return
        self._error = None
        worker = build_worker(str(image.root), request, executor=self.executor)
        worker.yielded.connect(self._on_progress)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self._build_root = image.root
        self._set_running(True)
        self.progress.max = max(plan.total_blocks, 1)
        self.progress.value = 0
        self._pbar = napari_progress(total=plan.total_blocks, desc="Building pyramid")
        self._say(f"Building {len(plan.new_levels)} levels of {image.root.name}…")
        worker.start()

    def cancel_build(self, *_: Any) -> None:
        """Ask the running build to stop; the image is restored before it reports back."""
        if self.worker is None or not self.worker.is_running:
            return
        self.worker.quit()
        self.cancel.enabled = False
        self._say("Cancelling… the image will be left as it was.")

    def _set_running(self, running: bool) -> None:
        for name in (
            "image", "num_levels", "coarsening_xy", "coarsening_z", "method", "chunksize",
            "edge", "overwrite", "preview", "build",
        ):  # fmt: skip
            self[name].enabled = not running
        self.cancel.enabled = running

    def _on_progress(self, step: Any) -> None:
        # Repaints are coalesced: every one recomposes the whole window (the OpenGL canvas
        # included), which costs tens of ms with software rendering.
        self._step = step
        if step.phase != "writing":
            self._show_progress()
        elif not self._progress_timer.isActive():
            self._progress_timer.start()

    def _show_progress(self) -> None:
        step = self._step
        if step is None:
            return
        self.progress.max = max(step.total, 1)
        self.progress.value = step.done
        if step.phase == "writing" and not (self.worker and self.worker.abort_requested):
            self._say(f"Writing: block {step.done} of {step.total}")
        elif step.phase == "publishing":
            self._say("Publishing the new levels…")
        # Last: napari's bar processes events as it updates, so the build's end may be handled
        # inside this call; nothing of this (older) step may be shown after it.
        if self._pbar is not None:
            self._pbar.total = step.total
            self._pbar.update(step.done - self._pbar.n)

    def _on_error(self, exc: BaseException) -> None:
        self._error = exc

    def _on_finished(self) -> None:
        worker = self.worker
        self._progress_timer.stop()
        self._step = None
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        self._set_running(False)
        root = self._build_root
        if worker is not None and worker.plan is not None and root is not None:
            plan = worker.plan
            self._replace_layers(root)  # which also updates the planned levels
            self.progress.value = self.progress.max
            late = " (the cancel came too late)" if worker.abort_requested else ""
            self._say(f"Built {len(plan.levels)} levels of {root.name}{late}.")
            outcome = "built"
        elif self._error is not None:
            exc = self._error
            message = str(exc) if isinstance(exc, PyramidError) else f"{type(exc).__name__}: {exc}"
            self._say(f"Build failed: {message}")
            show_error(notification_text(f"Pyramid build failed: {message}"))
            outcome = "failed"
        else:
            self.progress.value = 0
            self._say("Cancelled; the image is unchanged.")
            outcome = "cancelled"
        self.events.build_finished.emit(outcome)

    def _replace_layers(self, root: Path) -> None:
        """Swap the source layers for the multiscale layers read back from disk."""
        self._remove_preview()
        fresh = [d for d in layer_data(root) if d[1]["metadata"][PATH_KEY] == str(root)]
        if not fresh:
            self._update_plan()
            return
        picked = self.image.value
        chosen = None
        self._quiet = True
        try:
            for position, old in enumerate(self._source_layers(root)):
                index = self._channel_of(old, position)
                match = [d for d in fresh if d[1]["metadata"][CHANNEL_KEY] in (index, None)]
                data, kwargs, kind = (match or fresh)[0]
                kwargs = {**kwargs, **self._display_state(old)}
                with layer_source(path=str(root), reader_plugin="napari-pyramids"):
                    new = Layer.create(data, kwargs, kind)
                where = self._viewer.layers.index(old)
                self._viewer.layers.remove(old)
                self._viewer.layers.insert(where, new)
                if old is picked:
                    chosen = new
        finally:
            self._quiet = False
        self._refresh_choices()
        if chosen is not None:
            self.image.value = chosen

    # ----------------------------------------------------------------- refusals
    def _say(self, text: str) -> None:
        self.status.value = visible_text(text)

    def _refuse(self, message: str) -> None:
        self._say(message)
        show_warning(notification_text(message))
        self.events.refused.emit(message)
