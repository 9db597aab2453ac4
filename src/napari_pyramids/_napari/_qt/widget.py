"""The Pyramid Builder dock widget: pick a zarr layer, preview the pyramid, build it, reload.

The widget owns the controls and wires three parts, one job each: the layer picker
(:mod:`..picker`), the preview (:mod:`..preview`) and the build runner (:mod:`.runner`).
Everything it decides comes from :mod:`napari_pyramids` (defaults, plans, refusals, disk
estimates, layer data) and everything it says from :mod:`..texts`. Text that may come from
an image's metadata is shown in plain-text labels and escaped in notifications
(:mod:`.text`).

Tests and scripts drive it by name: set ``widget.num_levels.value``, click with
``widget.build.clicked()``, and wait on ``widget.events.build_finished`` (or on
``widget.worker.finished``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import napari.viewer
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    LineEdit,
    ProgressBar,
    PushButton,
    SpinBox,
)
from napari.layers import Layer
from napari.utils.notifications import show_warning
from qtpy.QtCore import QObject, QTimer, Signal

from ...errors import PyramidError, visible_text
from ...estimate import compression_ratio
from ...ome.image import OmeZarrImage
from ...options import BuildOptions, parse_chunksize
from ...pyramid.methods import METHODS
from ...pyramid.reduce import EDGES
from ...system import cpu_count
from ..dataset_texts import dataset_build_text, preview_of_dataset, ready_text, scope_text
from ..edit_texts import UPDATE_CANCELLING
from ..image_cache import ImageCache
from ..picker import LayerPicker, read_layers
from ..preview import PreviewLayers, give_look
from ..request import MOST_FACTOR, MOST_LEVELS, control_limits, default_request, plan_request
from ..scope import Scope, image_count, plan_for_dataset
from ..texts import (
    BUSY,
    CANCELLING,
    NO_LAYER,
    SEE_SUMMARY,
    building_text,
    describe_on_disk,
    describe_plan,
    in_widget_words,
    nothing_to_build,
    preview_failed_text,
    preview_text,
)
from .dataset_runner import DatasetEnd, DatasetRunner, reload_dataset_layers
from .editor import LabelEditor
from .idle import IdleCollection
from .runner import BLOCK_STEPS, BuildEnd, BuildRunner, reload_layers
from .text import notification_text, plain_label
from .worker import BuildWorker

__all__ = ["NO_LAYER", "BuilderEvents", "PyramidBuilder", "notification_text"]

DEBOUNCE_MS = 300
# Computed preview tiles are drawn at most this often: each redraw re-slices the preview.
REDRAW_MS = 100
# The controls that set a build; all of them but "image" are off while a build runs.
PARAMETERS = ("num_levels", "coarsening_xy", "coarsening_z", "method", "chunksize", "edge")
SETTINGS = ("image", *PARAMETERS, "overwrite", "with_labels", "whole_plate")


class BuilderEvents(QObject):
    """Qt signals of the widget, for tests and scripts (``qtbot.waitSignal``)."""

    preview_updated = Signal()  # the preview layers were placed, replaced or removed
    tiles_ready = Signal()  # preview tiles were computed (emitted from a worker thread)
    preview_redrawn = Signal()  # the preview layers were sliced again with the new tiles
    build_finished = Signal(str)  # "built", "cancelled" or "failed", after the layers changed
    refused = Signal(str)  # a click was refused; the message


class PyramidBuilder(Container):
    """Build the pyramid of a zarr layer's image in place, with a live preview.

    Attributes
    ----------
    events : BuilderEvents
        ``preview_updated``, ``build_finished(outcome)`` and ``refused(message)``.
    memory_budget, workers, executor
        Passed to the engine; None uses its defaults (256 MiB, the CPU cores, threads).
        ``workers`` starts at the CPU cores less one, left to napari.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        picker = LayerPicker(viewer.layers)
        super().__init__(
            widgets=[
                ComboBox(name="image", label="image", choices=picker.choices),
                plain_label("info"),
                SpinBox(name="num_levels", label="levels", min=2, max=MOST_LEVELS, value=2),
                SpinBox(name="coarsening_xy", label="factor Y/X", min=2, max=MOST_FACTOR),
                SpinBox(name="coarsening_z", label="factor Z", min=1, max=MOST_FACTOR, value=1),
                ComboBox(name="method", label="method", choices=METHODS, value="mean"),
                LineEdit(name="chunksize", label="chunks", value=""),
                ComboBox(name="edge", label="edges", choices=EDGES, value="trim"),
                CheckBox(name="overwrite", label="", text="overwrite existing levels"),
                CheckBox(
                    name="with_labels",
                    label="",
                    text="labels: build its label images too",
                    value=True,
                ),
                CheckBox(name="whole_plate", label="", text="every image of its plate"),
                plain_label("summary"),
                PushButton(name="preview", label="", text="Preview"),
                PushButton(name="build", label="", text="Build pyramid"),
                PushButton(name="cancel", label="", text="Cancel", enabled=False),
                ProgressBar(name="progress", label="", min=0, max=1, value=0),
                plain_label("status"),
            ],
            labels=True,
        )
        for name in ("info", "summary", "progress", "status"):
            # Full-width rows: their content says what they are.
            self[name]._labeled_widget()._label_widget.visible = False
        self.chunksize.native.setPlaceholderText("blank: same as level 0")
        self.events = BuilderEvents()
        self.memory_budget: int | str | None = None
        # One core is left to napari: the UI stays responsive while the build runs.
        self.workers: int | None = max(1, cpu_count() - 1)
        self.executor: Any = None
        self._viewer = viewer
        self._root: Path | None = None
        self._scope: Scope | None = None
        self._ratios: dict[Path, float | None] = {}
        self._images = ImageCache()
        self._picker = picker
        self._preview = PreviewLayers(viewer.layers)
        self._runner = BuildRunner()
        self._datasets = DatasetRunner()
        self._last_runner: BuildRunner | DatasetRunner = self._runner
        self._debounce = QTimer()
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(DEBOUNCE_MS)
        self._redraw = QTimer()
        self._redraw.setSingleShot(True)
        self._redraw.setInterval(REDRAW_MS)
        # The objects the widget's work leaves are collected while the viewer is quiet, not
        # by a full collection Python would start in the user's next click.
        self._idle = IdleCollection(busy=self._working)
        self.native.destroyed.connect(self._idle.close)

        self._picker.changed.connect(self._refresh_choices)
        self._preview.updated.connect(self.events.preview_updated.emit)
        # Qt queues a signal emitted in a worker thread to this (the UI) thread.
        self._preview.tiles_ready.connect(self.events.tiles_ready.emit)
        self.events.tiles_ready.connect(self._on_tiles_ready)
        self._redraw.timeout.connect(self._redraw_preview)
        self._runner.progressed.connect(self._on_progress)
        self._runner.finished.connect(self._on_build_end)
        self._datasets.progressed.connect(self._on_progress)
        self._datasets.finished.connect(self._on_dataset_end)
        self._debounce.timeout.connect(self._refresh_preview)
        self.image.changed.connect(self._on_image_changed)
        viewer.layers.selection.events.active.connect(self._follow_selection)
        for name in PARAMETERS:
            self[name].changed.connect(self._on_parameter_changed)
        for name in ("overwrite", "with_labels", "whole_plate"):
            self[name].changed.connect(self._update_plan)
        self.preview.clicked.connect(self.show_preview)
        self.build.clicked.connect(self.start_build)
        self.cancel.clicked.connect(self.cancel_build)
        self._refresh_choices()
        self.editor = LabelEditor(self, viewer)

    @property
    def worker(self) -> BuildWorker | None:
        """The running (or last) build's thread worker (of one image, or of several)."""
        return self._last_runner.worker

    @property
    def preview_executor(self) -> Any:
        """Where preview tiles are computed; None: the widget's own threads."""
        return self._preview.executor

    @preview_executor.setter
    def preview_executor(self, executor: Any) -> None:
        self._preview.executor = executor

    @property
    def preview_layers(self) -> Sequence[Layer]:
        """The preview layers on show (empty if none)."""
        return self._preview.layers

    @property
    def writing(self) -> bool:
        """Whether a build (of one image or several) or a pyramid update is running."""
        return self._runner.running or self._datasets.running or self.editor.running

    def _working(self) -> bool:
        """Whether a build, an update or the preview's tiles are still under way."""
        pyramid = self._preview.pyramid
        return self.writing or self._debounce.isActive() or (pyramid is not None and pyramid.busy)

    @contextmanager
    def _updating(self) -> Iterator[None]:
        """Change controls and layers without any handler seeing the states in between."""
        with ExitStack() as stack:
            stack.enter_context(self._picker.changed.blocked())
            for name in SETTINGS:
                stack.enter_context(self[name].changed.blocked())
            yield

    # ----------------------------------------------------------------- picking an image
    def open_path(self, path: str | os.PathLike[str]) -> list[Layer]:
        """Open the image at ``path`` with our reader and pick it; refuse clearly if unreadable.

        Returns the layers added (none if the image was refused).
        """
        try:
            layers = read_layers(path)
        except PyramidError as exc:
            self._refuse(str(exc))
            return []
        for layer in layers:
            self._viewer.add_layer(layer)
        self.image.value = layers[0]
        return layers

    def _follow_selection(self, *_: Any) -> None:
        """Pick the layer selected in napari's layer list, when the widget lists it (a
        preview, a layer of no OME-Zarr image, or a running build leaves the pick alone)."""
        # The viewer a plugin gets hands out proxies of its layers: compare what they wrap.
        active = _unwrapped(self._viewer.layers.selection.active)
        if active is None or not self.image.enabled:
            return
        if _unwrapped(self.image.value) is active:
            return
        for choice in self.image.choices:
            if _unwrapped(choice) is active:
                self.image.value = choice
                return

    def _refresh_choices(self) -> None:
        self.image.reset_choices()
        self._on_image_changed()

    def _on_image_changed(self, *_: Any) -> None:
        scope = self._pick_scope()
        root = scope.image if scope is not None else None
        changed = root != self._root or scope != self._scope
        self._root, self._scope = root, scope
        self._show_scope_controls()
        if changed:
            self._preview.remove()
            if root is not None:
                try:
                    self._set_options(default_request(self._images.open(root)))
                except PyramidError as exc:
                    self._say(str(exc))
        self._update_plan()

    # ----------------------------------------------------------------- controls and plan
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

    def _set_options(self, options: BuildOptions) -> None:
        with self._updating():
            # Another image's bounds must not refuse this one's values; its own come next.
            self.num_levels.max = MOST_LEVELS
            self.coarsening_xy.max = self.coarsening_z.max = MOST_FACTOR
            # An image already about 256 px gets one level more: building is why we're here.
            self.num_levels.value = max(2, int(options.num_levels))
            self.coarsening_xy.value = options.coarsening_xy
            self.coarsening_z.value = options.coarsening_z
            self.method.value = options.method or "mean"
            self.chunksize.value = ""
            self.edge.value = options.edge
            self.overwrite.value = options.overwrite

    def _on_parameter_changed(self, *_: Any) -> None:
        self._update_plan()
        if self._preview.layers:
            self._debounce.start()

    def _update_plan(self, *_: Any) -> None:
        note = self._picker.note
        if self._root is None:
            self.info.value, self.summary.value = note, ""
            return
        try:
            image = self._images.open(self._root)
        except PyramidError as exc:
            self.info.value, self.summary.value = note, ""
            self._say(str(exc))
            return
        lines = [scope_text(self._scope), describe_on_disk(image)]
        self.info.value = "\n".join(filter(None, [*lines, note if self.image.choices else ""]))
        self._bound_controls(image)
        several = self._build_path()
        try:
            if several is None:
                plan = plan_request(image, self.request(image))
            else:
                plan = plan_for_dataset(image, self.request(image))
        except PyramidError as exc:
            # Said once, in the summary; the status keeps to what happened.
            self.summary.value = visible_text(nothing_to_build(str(exc)))
            if not self._runner.running:
                self._say("")
            return
        head = ""
        if several is not None:
            whole = several != image.root
            head = dataset_build_text(several, image.root, whole, plan is None) + "\n"
        if plan is None:
            self.summary.value = visible_text(head.rstrip("\n"))
        else:
            if image.root not in self._ratios:  # walking level 0's chunks once is enough
                self._ratios[image.root] = compression_ratio(image)
            count = 1 if several is None else self._images_under(several, image.root)
            self.summary.value = head + describe_plan(plan, self._ratios[image.root], count)
        if not (self._runner.running or self._datasets.running):
            self._say(ready_text(self._scope))

    def _images_under(self, path: Path, root: Path) -> int:
        """How many images (label images included) a build of ``path`` covers."""
        if path == root:
            return 1 + (self._scope.label_count if self._scope is not None else 0)
        dataset = self._picker.dataset_at(path)
        if dataset is None:
            return 1
        images, labels = image_count(dataset)
        return images + (labels if self.with_labels.value else 0)

    def _bound_controls(self, image: OmeZarrImage) -> None:
        """Let the spin boxes offer only what the image allows (levels, factors)."""
        try:
            limits = control_limits(image, self.request(image))
        except PyramidError:  # the chunk text is refused: the plan says so
            return
        with self._updating():
            self.coarsening_xy.max = limits.coarsening_xy
            self.coarsening_z.max = limits.coarsening_z
            self.coarsening_z.enabled = limits.coarsening_z > 1 and not self._runner.running
            self.num_levels.max = limits.num_levels

    # ----------------------------------------------------------------- preview
    def show_preview(self, *_: Any) -> None:
        """Show (or replace) the planned pyramid as lazy multiscale layers over the source."""
        self._debounce.stop()
        if self._root is None:
            self._refuse(NO_LAYER)
            return
        if self._scope is not None and self._scope.dataset is not None:
            self._refuse(preview_of_dataset(self._scope.dataset.root, self._root))
            return
        try:
            image = self._images.open(self._root)
            levels = self._preview.show(image, self.request(image))
        except PyramidError as exc:
            self._preview.remove()
            self._refuse(in_widget_words(exc))
            return
        self._say(preview_text(levels))

    def _refresh_preview(self) -> None:
        if self._preview.layers:
            self.show_preview()

    def _on_tiles_ready(self) -> None:
        if not self._redraw.isActive():
            self._redraw.start()

    def _redraw_preview(self) -> None:
        pyramid = self._preview.pyramid
        # Landed tiles change neither the extent nor the selection: only the slice is read
        # again, and the thumbnail (another read of the coarsest level) once all have landed.
        idle = pyramid is None or not pyramid.busy
        for layer in self._preview.layers:
            # napari keeps the coarsest level of a 2D multiscale layer once read; it changes
            # as tiles land, so that copy is dropped (private, hence the guard).
            materializer = getattr(layer, "_level_materializer", None)
            if materializer is not None and hasattr(materializer, "cache_clear"):
                materializer.cache_clear()
            layer.refresh(thumbnail=idle, extent=False, highlight=False)
        if pyramid is not None and pyramid.error is not None:
            self._say(preview_failed_text(pyramid.error))
        self._idle.soon()
        self.events.preview_redrawn.emit()

    # ----------------------------------------------------------------- build
    def start_build(self, *_: Any) -> None:
        """Check the request, then build in a thread worker; refuse clearly if it cannot."""
        if self.writing:
            self._refuse(BUSY)
            return
        if self._root is None:
            self._refuse(NO_LAYER)
            return
        if not self.editor.write_edits_under(self._build_path() or self._root):
            return
        if self._build_path() is not None:
            self._start_dataset_build()
            return
        try:
            image = self._images.open(self._root)
            options = self.request(image)
            plan = plan_request(image, options)
        except PyramidError as exc:
            self._refuse(str(exc))
            return
        self._set_running(True)
        self.progress.max = max(plan.total_blocks * BLOCK_STEPS, 1)
        self.progress.value = 0
        self._say(building_text(plan, image.root))
        self._last_runner = self._runner
        self._runner.start(image.root, options, plan.total_blocks, self.executor)

    def cancel_build(self, *_: Any) -> None:
        """Ask the running build to stop (the image is restored before it reports back), or
        the running update (it stops at its next block)."""
        if self._runner.cancel() or self._datasets.cancel():
            self.cancel.enabled = False
            self._say(CANCELLING)
        elif self.editor.cancel_update():
            self.cancel.enabled = False
            self._say(UPDATE_CANCELLING)

    def _set_running(self, running: bool) -> None:
        for name in (*SETTINGS, "preview", "build", "edit", "update"):
            self[name].enabled = not running
        # No Z axis, nothing to set.
        self.coarsening_z.enabled = not running and self.coarsening_z.max > 1
        self.cancel.enabled = running

    def _on_progress(self, done: int, total: int, text: str) -> None:
        self.progress.max = max(total, 1)
        self.progress.value = done
        if text:
            self._say(text)

    def _on_build_end(self, end: BuildEnd) -> None:
        self._set_running(False)
        if end.outcome == "built":
            with self._updating():  # a next build must ask again to replace these levels
                self.overwrite.value = False
            self._show_built(end.root)
            self.progress.value = self.progress.max
        elif end.outcome == "cancelled":
            self.progress.value = 0
        self._say(end.message)
        self.events.build_finished.emit(end.outcome)

    def _show_built(self, root: Path) -> None:
        """Show the image's new pyramid in its layers, looking as the preview did."""
        self._show_reloaded(lambda: reload_layers(self._viewer.layers, root), keep_look=True)

    def _show_reloaded(
        self, reload: Callable[[], list[tuple[Layer, Layer]]], keep_look: bool
    ) -> None:
        """Take the preview down, ``reload`` the layers, then show the layers it hid."""
        # The sources stay hidden until they hold the new levels: shown before, napari would
        # draw their old level 0 whole once more (0.15 s on an 8192² plane).
        looks = self._preview.remove(restore=False, keep_look=keep_look)
        picked = self.image.value
        with self._updating():
            swapped = reload()
        replaced = {id(old): new for old, new in swapped}
        for source, look in looks:
            layer = replaced.get(id(source), source)
            if layer in self._viewer.layers:
                give_look(layer, look)
        self._refresh_choices()
        for old, new in swapped:
            if old is picked:
                self.image.value = new

    # ----------------------------------------------------------------- several images
    def _pick_scope(self) -> Scope | None:
        """What the picked layer lets a build cover (None: no image; a refusal is said)."""
        try:
            return self._picker.scope(self.image.value)
        except PyramidError as exc:
            self._say(str(exc))
            return None

    def _show_scope_controls(self) -> None:
        """Offer the label images and the plate only when the pick has them."""
        scope = self._scope
        self.with_labels.visible = scope is not None and scope.label_count > 0
        self.whole_plate.visible = scope is not None and scope.plate is not None
        if scope is not None and scope.plate is not None:
            self.whole_plate.text = f"every image of its plate {scope.plate.name}"

    def _build_path(self) -> Path | None:
        """The path a dataset build takes for the pick and the ticks; None: the image alone."""
        if self._scope is None:
            return None
        return self._scope.build_path(self.with_labels.value, self.whole_plate.value)

    def _start_dataset_build(self) -> None:
        """Build the image with its labels, its plate, or the plate picked, image by image."""
        path = self._build_path()
        if path is None or self._root is None:
            return
        try:
            image = self._images.open(self._root)
            options = self.request(image)
            plan_for_dataset(image, options)
        except PyramidError as exc:
            self._refuse(str(exc))
            return
        self._set_running(True)
        self.progress.max, self.progress.value = 1, 0
        self._say(f"Building every image of {path.name}…")
        self._last_runner = self._datasets
        self._datasets.start(path, options, self.with_labels.value, 1, self.executor)

    def _on_dataset_end(self, end: DatasetEnd) -> None:
        self._set_running(False)
        if end.report is not None:
            self._picker.forget_datasets()
            shown_whole = self._scope.dataset.root if self._scope and self._scope.dataset else None
            report = end.report
            self._show_reloaded(
                lambda: reload_dataset_layers(self._viewer.layers, report, shown_whole),
                keep_look=False,
            )
        if end.outcome == "cancelled":
            self.progress.value = 0
        self._say(end.message)
        self.events.build_finished.emit(end.outcome)

    # ----------------------------------------------------------------- status
    def _say(self, text: str) -> None:
        self.status.value = visible_text(text)
        self._idle.soon()

    def _refuse(self, message: str) -> None:
        # Said once in the widget: a reason the summary shows already is pointed at.
        shown = message and visible_text(nothing_to_build(message)) == self.summary.value
        self._say(SEE_SUMMARY if shown else message)
        show_warning(notification_text(message))
        self.events.refused.emit(message)


def _unwrapped(layer: Any) -> Any:
    """The layer behind napari's public-only proxy (the layer itself if not a proxy)."""
    return getattr(layer, "__wrapped__", layer)
