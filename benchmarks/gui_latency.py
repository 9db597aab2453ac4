"""How the Pyramid Builder feels: main-thread stalls, preview latency, reload against napari.

Run under a real X display (not part of the test suite; timings are never asserted)::

    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/gui_latency.py [--size 8192]

A QTimer ticks every 10 ms on napari's (UI) thread; a gap between ticks is a stall the user
feels. It writes a SIZE x SIZE uint16 plane (level 0 only, 512 x 512 chunks) into a
temporary folder, opens it in napari with the widget docked, and reports, in this order:

- preview (clicked 2 s after the image opened, as a user would): from clicking Preview to
  the first frame drawn with the preview layer, to the tiles in view computed exactly, and
  the worst stall meanwhile;
- each setting change with the preview shown (levels, method mean/median/max/mode, factor,
  edges): the worst stall from the change until its preview is computed and drawn;
- clicking Build and the build itself (worst stall while writing), its progress updates;
- the reload after the build (the stall of the widget's swap of the layers) against
  napari-ome-zarr opening the same image in the same run;
- cancel: from Cancel (clicked after the first block) to the image restored;
- File > Open Sample: the worst stall while the sample is made and opened, then napari's
  own File > Open Sample > Astronaut (if scikit-image is installed). The session's first
  layer (the plane) has paid napari's one-time costs (pint's unit registry, ~0.2 s) by then.

For the preview and the samples, ``napari_adding_same_layers`` is napari creating and adding
copies of the same layers without our code: the floor any plugin's stall stands on.

Python's full (generation 2) garbage collections are recorded too: one takes 0.1-0.2 s on
napari's 300k+ objects and holds the interpreter, in whichever thread triggered it, so a
stall that coincides with one is the collector's, not the change's (``full_gc_ms``).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_plane(path: Path, size: int) -> Path:
    """A smooth gradient with Poisson-like noise, written band by band."""
    import zarr

    group = zarr.open_group(path, mode="w-", zarr_format=2)
    array = group.create_array(
        "0", shape=(size, size), chunks=(512, 512), dtype="uint16",
        chunk_key_encoding={"name": "v2", "separator": "/"},
    )  # fmt: skip
    rng = np.random.default_rng(0)
    xx = np.linspace(0, 8 * np.pi, size, dtype=np.float32)
    for start in range(0, size, 512):
        yy = np.linspace(start, start + 512, 512, dtype=np.float32)[:, None] / size * 8 * np.pi
        smooth = 1000 + 800 * np.sin(xx)[None, :] * np.cos(yy)
        array[start : start + 512] = rng.poisson(smooth).astype(np.uint16)
    axes = [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    group.attrs.update({
        "multiscales": [{
            "version": "0.4", "name": "plane", "axes": axes,
            "datasets": [{"path": "0", "coordinateTransformations": [
                {"type": "scale", "scale": [1.0, 1.0]}]}],
        }]
    })  # fmt: skip
    return path


class FrameClock:
    """Times of the canvas's draw events."""

    def __init__(self, viewer) -> None:
        self.draws: list[float] = []
        viewer.window._qt_viewer.canvas._scene_canvas.events.draw.connect(self._on_draw)

    def _on_draw(self, event) -> None:
        self.draws.append(time.perf_counter())

    def first_after(self, start: float, app, timeout: float = 120.0) -> float:
        while time.perf_counter() - start < timeout:
            app.processEvents()
            later = [t for t in self.draws if t > start]
            if later:
                return later[0]
        raise TimeoutError("no frame drawn")


class Heartbeat:
    """Ticks of a 10 ms QTimer on the UI thread; gaps between them are stalls."""

    def __init__(self) -> None:
        from qtpy.QtCore import QTimer

        self.ticks: list[float] = []
        self._timer = QTimer()
        self._timer.setInterval(10)
        self._timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))
        self._timer.start()

    def worst_ms(self, start: float, end: float | None = None) -> float:
        """The longest gap between ticks in [start, end], in ms (end: now)."""
        end = time.perf_counter() if end is None else end
        stamps = [start, *(t for t in self.ticks if start < t <= end), end]
        return float(np.diff(stamps).max() * 1000)


class FullCollections:
    """Start times and durations of Python's full (generation 2) garbage collections."""

    def __init__(self) -> None:
        self.runs: list[tuple[float, float]] = []
        self._start = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.runs.append((self._start, time.perf_counter() - self._start))

    def since_ms(self, start: float) -> list[float]:
        """Durations (ms) of the full collections that started after ``start``."""
        return [round(seconds * 1000, 1) for begun, seconds in self.runs if begun >= start]


def run_for(app, seconds: float) -> None:
    """Let the event loop run (as napari's would) for ``seconds``."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.002)


def settle_preview(widget, app, timeout: float = 120.0) -> float:
    """Run the event loop until the preview's tiles in view are computed and drawn."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        app.processEvents()
        if not _computing(widget) and not widget._debounce.isActive():
            run_for(app, 0.05)  # a redraw may still queue new tiles
            if not _computing(widget):
                return time.perf_counter()
        time.sleep(0.002)
    raise TimeoutError("the preview did not settle")


def _computing(widget) -> bool:
    """Whether preview tiles are queued, computing or waiting to be drawn."""
    pyramid = getattr(widget._preview, "pyramid", None)  # none before tiled previews
    redraw = getattr(widget, "_redraw", None)
    return bool(
        (pyramid is not None and (pyramid._jobs or pyramid._running))
        or (redraw is not None and redraw.isActive())
    )


def measure_preview(widget, clock, beat, app, collections) -> dict:
    """From a Preview click: first frame with the preview layer, all tiles in view exact."""
    start = time.perf_counter()
    widget.preview.clicked()
    assert widget.preview_layers, widget.status.value
    first = clock.first_after(start, app) - start
    done = settle_preview(widget, app)
    return {
        "first_frame_s": first,
        "exact_in_view_s": done - start,
        "worst_stall_ms": beat.worst_ms(start, done),
        "full_gc_ms": collections.since_ms(start),
    }


def measure_change(widget, name, value, beat, app, collections) -> dict:
    """A setting changed with the preview shown, until its new preview is drawn exactly."""
    start = time.perf_counter()
    widget[name].value = value
    done = settle_preview(widget, app)
    return {
        "settled_s": done - start,
        "worst_stall_ms": beat.worst_ms(start, done),
        "full_gc_ms": collections.since_ms(start),
    }


def measure_sample(viewer, beat, app, collections, plugin="napari-pyramids", name="sample"):
    """File > Open Sample > ``plugin``, as the menu runs it; then napari adding the same layers.

    The second figure is napari's own cost of those layers (creating them, their controls
    and visuals, the first draw) without any of our code: copies made from the layers'
    data tuples, added by ``viewer.add_layer`` once the originals are gone.
    """
    start = time.perf_counter()
    layers = viewer.open_sample(plugin, name)
    opened = time.perf_counter()
    run_for(app, 0.5)
    result = {
        "open_s": opened - start,
        "worst_stall_ms": beat.worst_ms(start),
        "full_gc_ms": collections.since_ms(start),
    }
    tuples = [layer.as_layer_data_tuple() for layer in layers]
    remove_all(viewer, layers, app)
    result["napari_adding_same_layers"] = measure_adding(viewer, tuples, beat, app, collections)
    return result


def measure_adding(viewer, tuples, beat, app, collections) -> dict:
    """napari creating and adding layers from data tuples: the floor of any plugin's stall."""
    from napari.layers import Layer

    start = time.perf_counter()
    layers = [viewer.add_layer(Layer.create(*layer_data)) for layer_data in tuples]
    run_for(app, 0.5)
    result = {"worst_stall_ms": beat.worst_ms(start), "full_gc_ms": collections.since_ms(start)}
    remove_all(viewer, layers, app)
    return result


def remove_all(viewer, layers, app) -> None:
    for layer in layers:
        viewer.layers.remove(layer)
    run_for(app, 0.3)


def measure_cancel(widget) -> float:
    """Seconds from Cancel (after the first block) to the image being restored."""
    from qtpy.QtCore import QEventLoop

    loop = QEventLoop()
    clicked: list[float] = []

    def cancel_after_first_block(step) -> None:
        if step.done >= 1 and not clicked:
            clicked.append(time.perf_counter())
            widget.cancel.clicked()

    widget.events.build_finished.connect(loop.quit)
    # Small blocks, so that the build is still writing when the UI handles its first block.
    budget, widget.memory_budget = widget.memory_budget, "16MiB"
    widget.build.clicked()
    widget.worker.yielded.connect(cancel_after_first_block)
    loop.exec()
    widget.memory_budget = budget
    widget.events.build_finished.disconnect(loop.quit)
    assert widget.status.value.startswith("Cancelled"), widget.status.value
    return time.perf_counter() - clicked[0]


def measure_build(viewer, widget, beat, app, workers) -> dict:
    """Click Build with the preview shown; stalls while writing and in the reload."""
    from qtpy.QtCore import QEventLoop

    done: list[str] = []
    widget.events.build_finished.connect(done.append)
    updates: list[int] = []
    widget._runner.progressed.connect(lambda d, t, text: updates.append(d))
    reload: list[float] = []
    show_built = widget._show_built

    def stamped(root) -> None:  # the worker is done: what follows is the reload
        reload.append(time.perf_counter())
        show_built(root)
        reload.append(time.perf_counter())

    widget._show_built = stamped
    if workers is not None:
        widget.workers = workers
    start = time.perf_counter()
    widget.build.clicked()
    clicked = time.perf_counter()
    # A refused build finishes nothing: say why instead of waiting forever.
    assert widget.status.value.startswith("Building"), widget.status.value
    loop = QEventLoop()  # napari's own event loop, as a user runs it
    widget.events.build_finished.connect(loop.quit)
    loop.exec()
    end = time.perf_counter()
    run_for(app, 0.5)  # let the reloaded layers draw
    return {
        "outcome": done[0],
        "click_s": clicked - start,
        "build_s": end - start,
        "progress_updates": len(updates),
        "worst_stall_while_writing_ms": beat.worst_ms(start, reload[0]),
        "reload_stall_s": reload[1] - reload[0],
        "worst_stall_including_reload_ms": beat.worst_ms(start),
        "reloaded_levels": len(viewer.layers[0].data) if viewer.layers[0].multiscale else 1,
    }


def measure_napari_ome_zarr(viewer, path, app) -> float:
    """Seconds napari-ome-zarr takes to open the image (all on the UI thread)."""
    start = time.perf_counter()
    layers = viewer.open(str(path), plugin="napari-ome-zarr")
    seconds = time.perf_counter() - start
    run_for(app, 0.3)
    for layer in layers:
        viewer.layers.remove(layer)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument(
        "--workers", type=int, default=None, help="build workers (default: the widget's)"
    )
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    import napari
    from qtpy.QtWidgets import QApplication

    folder = Path(tempfile.mkdtemp(prefix="napari-pyramids-gui-bench-"))
    try:
        path = write_plane(folder / "plane.ome.zarr", args.size)
        viewer = napari.Viewer()
        viewer.window.resize(1400, 900)
        _, widget = viewer.window.add_plugin_dock_widget("napari-pyramids", "Pyramid Builder")
        app = QApplication.instance()
        clock = FrameClock(viewer)
        beat = Heartbeat()
        collections = FullCollections()
        results: dict = {"size": args.size, "cpus": os.cpu_count()}
        [source] = viewer.open(str(path), plugin="napari-pyramids")
        viewer.reset_view()
        run_for(app, 2.0)  # a user looks at the image before clicking Preview
        results["levels"] = widget.num_levels.value
        results["preview"] = measure_preview(widget, clock, beat, app, collections)
        results["preview"]["napari_adding_same_layers"] = measure_adding(
            viewer, [layer.as_layer_data_tuple() for layer in widget.preview_layers],
            beat, app, collections,
        )  # fmt: skip
        changes = [
            ("num_levels", widget.num_levels.value - 1),
            ("method", "median"), ("method", "max"), ("method", "mode"), ("method", "mean"),
            ("coarsening_xy", 3), ("coarsening_xy", 2),
            ("edge", "keep"), ("edge", "trim"),
            ("num_levels", widget.num_levels.value),
        ]  # fmt: skip
        results["changes"] = {
            f"{name}={value}": measure_change(widget, name, value, beat, app, collections)
            for name, value in changes
        }
        viewer.camera.zoom = 1.0  # 1:1 at the centre: only the visible tiles of level 0
        run_for(app, 0.3)
        results["preview_zoomed_1to1"] = measure_preview(widget, clock, beat, app, collections)
        viewer.reset_view()
        settle_preview(widget, app)
        results["cancel_s"] = measure_cancel(widget)
        results["build"] = measure_build(viewer, widget, beat, app, args.workers)
        results["napari_ome_zarr_open_s"] = measure_napari_ome_zarr(viewer, path, app)
        run_for(app, 2.0)
        results["open_sample"] = measure_sample(viewer, beat, app, collections)
        if importlib.util.find_spec("skimage") is not None:  # napari's samples need it
            run_for(app, 2.0)
            results["napari_open_sample_astronaut"] = measure_sample(
                viewer, beat, app, collections, "napari", "astronaut"
            )
        # Every full collection of the run, wherever it fell: the widget's own, run while
        # the viewer is quiet (not felt, but a pause all the same), napari's on removals.
        results["all_full_collections_ms"] = collections.since_ms(0.0)
        del source
        viewer.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
