"""The README screenshots: napari with the Pyramid Builder in each state a user meets.

xvfb-run -a -s "-screen 0 1600x1000x24" python docs/make_screenshot.py docs

writes, in the folder given:

- ``screenshot-preview.png``: the sample's planned pyramid previewed, nothing written;
- ``screenshot-building.png``: a build half-way, with its progress and Cancel;
- ``screenshot-built.png``: the layers reloaded as a pyramid, 'overwrite' unticked;
- ``screenshot-refusal.png``: Build clicked again: the refusal in the widget and napari's
  notification.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import napari
from PIL import Image
from qtpy.QtCore import QEventLoop, QTimer

from napari_pyramids._napari.sample_data import write_sample_image


class HeldExecutor(ThreadPoolExecutor):
    """Runs the first ``free`` blocks, then holds the rest until ``release()``: a build
    caught half-way, whatever the machine's speed."""

    def __init__(self, free: int) -> None:
        super().__init__(max_workers=2)
        self._free, self._submitted = free, 0
        self._gate = threading.Event()
        self.holding = threading.Event()
        self._lock = threading.Lock()

    def submit(self, fn, /, *args, **kwargs):
        with self._lock:
            index = self._submitted
            self._submitted += 1

        def run():
            if index >= self._free:
                self.holding.set()
                self._gate.wait()
            return fn(*args, **kwargs)

        return super().submit(run)

    def release(self) -> None:
        self._gate.set()


def wait(ms: int) -> None:
    """Let Qt draw for ``ms`` milliseconds."""
    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def save(viewer: napari.Viewer, out: Path) -> None:
    pixels = viewer.screenshot(canvas_only=False, flash=False)
    # 128 colours keep the PNG small enough for the README.
    image = Image.fromarray(pixels).convert("RGB")
    image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    print(out)


def main(folder: Path) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="napari-pyramids-screenshot-"))
    try:
        path = write_sample_image(scratch / "sample.ome.zarr", size=2048, depth=4)
        viewer = napari.Viewer()
        viewer.window.resize(1280, 860)
        _, widget = viewer.window.add_plugin_dock_widget("napari-pyramids", "Pyramid Builder")
        viewer.open(str(path), plugin="napari-pyramids")

        widget.method.value = "max"
        widget.preview.clicked()
        viewer.reset_view()
        wait(1500)
        save(viewer, folder / "screenshot-preview.png")

        executor = HeldExecutor(free=6)
        widget.executor = executor
        loop = QEventLoop()
        widget.events.build_finished.connect(loop.quit)
        widget.build.clicked()
        while not executor.holding.is_set():
            wait(50)
        wait(800)
        save(viewer, folder / "screenshot-building.png")
        executor.release()
        loop.exec()
        executor.shutdown()

        viewer.reset_view()
        wait(1500)  # let the reloaded layers draw
        save(viewer, folder / "screenshot-built.png")

        widget.build.clicked()  # the pyramid is there and 'overwrite' is unticked
        wait(800)
        save(viewer, folder / "screenshot-refusal.png")
        viewer.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
