"""The README screenshot: napari with the Pyramid Builder after building the sample's pyramid.

xvfb-run -a -s "-screen 0 1600x1000x24" python docs/make_screenshot.py docs/screenshot.png
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import napari
from PIL import Image
from qtpy.QtCore import QEventLoop, QTimer

from napari_pyramids._napari.sample_data import write_sample_image


def main(out: Path) -> None:
    folder = Path(tempfile.mkdtemp(prefix="napari-pyramids-screenshot-"))
    try:
        path = write_sample_image(folder / "sample.ome.zarr", size=2048, depth=4)
        viewer = napari.Viewer()
        viewer.window.resize(1280, 800)
        _, widget = viewer.window.add_plugin_dock_widget("napari-pyramids", "Pyramid Builder")
        viewer.open(str(path), plugin="napari-pyramids")
        widget.preview.clicked()
        loop = QEventLoop()
        widget.events.build_finished.connect(loop.quit)
        widget.build.clicked()
        loop.exec()
        viewer.reset_view()
        QTimer.singleShot(1000, loop.quit)  # let the reloaded layers draw
        loop.exec()
        pixels = viewer.screenshot(canvas_only=False, flash=False)
        # 128 colours keep the PNG small enough for the README.
        image = Image.fromarray(pixels).convert("RGB")
        image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
        viewer.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
