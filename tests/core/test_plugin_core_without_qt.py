"""The plugin's plain parts (core, reader, writer, sample) import without Qt or napari."""

from __future__ import annotations

import subprocess
import sys

BLOCKER = """
import sys
BLOCKED = ("qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "napari", "magicgui", "superqt")
class Block:
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError("blocked " + name)
sys.meta_path.insert(0, Block())
import napari_pyramids._napari.layers, napari_pyramids.estimate
import napari_pyramids.options, napari_pyramids.newimage, napari_pyramids._napari.request
import napari_pyramids._napari.reader, napari_pyramids._napari.writer
import napari_pyramids._napari.sample_data
print([m for m in sys.modules if m.split(".")[0] in BLOCKED])
"""


def test_plain_modules_import_without_qt_or_napari():
    result = subprocess.run(
        [sys.executable, "-c", BLOCKER], capture_output=True, text=True, check=False
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
