"""How the Pyramid Builder feels: preview latency and the worst UI stall during a build.

Run under a real X display (not part of the test suite; timings are never asserted)::

    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/gui_latency.py [--size 8192]

It writes a SIZE x SIZE uint16 plane (level 0 only, 512 x 512 chunks) into a temporary
folder, opens it in napari with the widget docked, and reports:

- preview latency: from clicking Preview to the first frame the canvas draws with the
  preview layer, for the whole plane in view, again after a parameter change, and zoomed
  in to 1:1 (where only the visible tiles of level 0 are read);
- cancel: from Cancel (clicked after the first block) to the image restored;
- UI stall during a build: a QTimer ticks every 10 ms on the UI thread; the worst gap
  between ticks while the build writes, and including the reload of the layers at the end.
"""

from __future__ import annotations

import argparse
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


def measure_preview(viewer, widget, clock, app) -> float:
    """Seconds from a Preview click to the first frame drawn with the preview layer."""
    start = time.perf_counter()
    widget.preview.clicked()
    assert widget.preview_layers, widget.status.value
    return clock.first_after(start, app) - start


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument(
        "--workers", type=int, default=None, help="build workers (default: the widget's)"
    )
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    import napari
    from qtpy.QtCore import QEventLoop, QTimer
    from qtpy.QtWidgets import QApplication

    folder = Path(tempfile.mkdtemp(prefix="napari-pyramids-gui-bench-"))
    try:
        path = write_plane(folder / "plane.ome.zarr", args.size)
        viewer = napari.Viewer()
        viewer.window.resize(1400, 900)
        _, widget = viewer.window.add_plugin_dock_widget("napari-pyramids", "Pyramid Builder")
        app = QApplication.instance()
        clock = FrameClock(viewer)
        [source] = viewer.open(str(path), plugin="napari-pyramids")
        viewer.reset_view()
        for _ in range(20):
            app.processEvents()
        results = {"size": args.size, "levels": widget.num_levels.value}

        results["preview_whole_plane_s"] = measure_preview(viewer, widget, clock, app)
        widget.method.value = "max"  # a parameter change: the debounced refresh
        widget._debounce.stop()
        results["preview_after_change_s"] = measure_preview(viewer, widget, clock, app)
        viewer.camera.zoom = 1.0  # 1:1 at the centre: only the visible tiles of level 0
        for _ in range(20):
            app.processEvents()
        results["preview_zoomed_1to1_s"] = measure_preview(viewer, widget, clock, app)
        # The build is measured on its own: no preview to re-render, the view settled.
        for layer in list(widget.preview_layers):
            viewer.layers.remove(layer)
        viewer.reset_view()
        settle = QEventLoop()
        QTimer.singleShot(1000, settle.quit)
        settle.exec()

        results["cancel_s"] = measure_cancel(widget)

        ticks: list[float] = []
        timer = QTimer()
        timer.setInterval(10)
        timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
        done: list[str] = []
        widget.events.build_finished.connect(done.append)
        publish: list[float] = []
        reload_layers = widget._on_finished

        def stamped() -> None:  # the worker is done: what follows is the reload
            publish.append(time.perf_counter())
            reload_layers()

        widget._on_finished = stamped
        if args.workers is not None:
            widget.workers = args.workers
        timer.start()
        start = time.perf_counter()
        widget.build.clicked()
        # A refused build finishes nothing: say why instead of waiting forever.
        assert widget.status.value.startswith("Building"), widget.status.value
        loop = QEventLoop()  # napari's own event loop, as a user runs it
        widget.events.build_finished.connect(loop.quit)
        loop.exec()
        end = time.perf_counter()
        QTimer.singleShot(500, loop.quit)  # let the reloaded layers draw
        loop.exec()
        timer.stop()
        writing = [t for t in ticks if t <= publish[0]]
        gaps = np.diff([start, *writing])
        all_gaps = np.diff([start, *ticks])
        results.update({
            "build_outcome": done[0],
            "build_s": end - start,
            "ui_max_gap_while_building_ms": float(gaps.max() * 1000),
            "ui_p99_gap_while_building_ms": float(np.percentile(gaps, 99) * 1000),
            "ui_max_gap_including_reload_ms": float(all_gaps.max() * 1000),
            "reloaded_levels": len(viewer.layers[0].data) if viewer.layers[0].multiscale else 1,
            "cpus": len(os.sched_getaffinity(0)),
        })  # fmt: skip
        if os.environ.get("GUI_BENCH_DEBUG"):
            stamps = np.array([start, *ticks])
            worst = np.argsort(np.diff(stamps))[-8:]
            print(
                "worst gaps (ms, at s after click):",
                [
                    (round(float(np.diff(stamps)[i]) * 1000), round(float(stamps[i] - start), 3))
                    for i in worst
                ],
                "finished at",
                round(publish[0] - start, 3),
                "ticks",
                len(ticks),
            )
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
