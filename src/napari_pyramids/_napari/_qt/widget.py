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
from collections.abc import Iterator, Sequence
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
from ...images import open_image
from ...ome.image import OmeZarrImage
from ...options import BuildOptions, parse_chunksize
from ...pyramid.methods import METHODS
from ...pyramid.reduce import EDGES
from ...system import cpu_count
from ..picker import LayerPicker, read_layers, root_or_none
from ..preview import PreviewLayers
from ..request import MOST_FACTOR, MOST_LEVELS, control_limits, default_request, plan_request
from ..texts import (
    BUSY,
    CANCELLING,
    NO_LAYER,
    READY,
    building_text,
    describe_on_disk,
    describe_plan,
    in_widget_words,
    nothing_to_build,
    preview_text,
)
from .runner import BuildEnd, BuildRunner, reload_layers
from .text import notification_text, plain_label
from .worker import BuildWorker

__all__ = ["NO_LAYER", "BuilderEvents", "PyramidBuilder", "notification_text"]

DEBOUNCE_MS = 300
# The controls that set a build; all of them but "image" are off while a build runs.
PARAMETERS = ("num_levels", "coarsening_xy", "coarsening_z", "method", "chunksize", "edge")
SETTINGS = ("image", *PARAMETERS, "overwrite")


class BuilderEvents(QObject):
    """Qt signals of the widget, for tests and scripts (``qtbot.waitSignal``)."""

    preview_updated = Signal()  # the preview layers were placed, replaced or removed
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
        self._ratios: dict[Path, float | None] = {}
        self._picker = picker
        self._preview = PreviewLayers(viewer.layers)
        self._runner = BuildRunner()
        self._debounce = QTimer()
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(DEBOUNCE_MS)

        self._picker.changed.connect(self._refresh_choices)
        self._preview.updated.connect(self.events.preview_updated.emit)
        self._runner.progressed.connect(self._on_progress)
        self._runner.finished.connect(self._on_build_end)
        self._debounce.timeout.connect(self._refresh_preview)
        self.image.changed.connect(self._on_image_changed)
        for name in PARAMETERS:
            self[name].changed.connect(self._on_parameter_changed)
        self.overwrite.changed.connect(self._update_plan)
        self.preview.clicked.connect(self.show_preview)
        self.build.clicked.connect(self.start_build)
        self.cancel.clicked.connect(self.cancel_build)
        self._refresh_choices()

    @property
    def worker(self) -> BuildWorker | None:
        """The running (or last) build's thread worker."""
        return self._runner.worker

    @property
    def preview_layers(self) -> Sequence[Layer]:
        """The preview layers on show (empty if none)."""
        return self._preview.layers

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

    def _refresh_choices(self) -> None:
        self.image.reset_choices()
        self._on_image_changed()

    def _on_image_changed(self, *_: Any) -> None:
        root = root_or_none(self.image.value)
        if root != self._root:
            self._root = root
            self._preview.remove()
            if root is not None:
                try:
                    self._set_options(default_request(open_image(root)))
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
            image = open_image(self._root)
        except PyramidError as exc:
            self.info.value, self.summary.value = note, ""
            self._say(str(exc))
            return
        self.info.value = "\n".join(
            filter(None, [describe_on_disk(image), note if self.image.choices else ""])
        )
        self._bound_controls(image)
        try:
            plan = plan_request(image, self.request(image))
        except PyramidError as exc:
            # Said once, in the summary; the status keeps to what happened.
            self.summary.value = visible_text(nothing_to_build(str(exc)))
            if not self._runner.running:
                self._say("")
            return
        if image.root not in self._ratios:  # walking level 0's chunks once per image is enough
            self._ratios[image.root] = compression_ratio(image)
        self.summary.value = describe_plan(plan, self._ratios[image.root])
        if not self._runner.running:
            self._say(READY)

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
        try:
            image = open_image(self._root)
            levels = self._preview.show(image, self.request(image))
        except PyramidError as exc:
            self._preview.remove()
            self._refuse(in_widget_words(exc))
            return
        self._say(preview_text(levels))

    def _refresh_preview(self) -> None:
        if self._preview.layers:
            self.show_preview()

    # ----------------------------------------------------------------- build
    def start_build(self, *_: Any) -> None:
        """Check the request, then build in a thread worker; refuse clearly if it cannot."""
        if self._runner.running:
            self._refuse(BUSY)
            return
        if self._root is None:
            self._refuse(NO_LAYER)
            return
        try:
            image = open_image(self._root)
            options = self.request(image)
            plan = plan_request(image, options)
        except PyramidError as exc:
            self._refuse(str(exc))
            return
        self._set_running(True)
        self.progress.max = max(plan.total_blocks, 1)
        self.progress.value = 0
        self._say(building_text(plan, image.root))
        self._runner.start(image.root, options, plan.total_blocks, self.executor)

    def cancel_build(self, *_: Any) -> None:
        """Ask the running build to stop; the image is restored before it reports back."""
        if self._runner.cancel():
            self.cancel.enabled = False
            self._say(CANCELLING)

    def _set_running(self, running: bool) -> None:
        for name in (*SETTINGS, "preview", "build"):
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
        """Show the image's new pyramid in place of its layers, keeping the picked channel."""
        self._preview.remove()
        picked = self.image.value
        with self._updating():
            swapped = reload_layers(self._viewer.layers, root)
        self._refresh_choices()
        for old, new in swapped:
            if old is picked:
                self.image.value = new

    # ----------------------------------------------------------------- status
    def _say(self, text: str) -> None:
        self.status.value = visible_text(text)

    def _refuse(self, message: str) -> None:
        self._say(message)
        show_warning(notification_text(message))
        self.events.refused.emit(message)
