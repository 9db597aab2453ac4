"""The engine imports no Qt and no napari: it runs where neither is installed."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from imaging import write_image

BLOCKED = (
    "qtpy",
    "PyQt5",
    "PyQt6",
    "PySide2",
    "PySide6",
    "napari",
    "magicgui",
    "superqt",
    "vispy",
)

SCRIPT = f"""
import sys

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ImportError(f"{{name}} is blocked in this test")
        return None

sys.meta_path.insert(0, Blocker())
import napari_pyramids
import napari_pyramids
import napari_pyramids.cli
from napari_pyramids import build_pyramid, lazy_pyramid
built = build_pyramid(zarrurl=sys.argv[1], num_levels=3)
lazy_pyramid(zarrurl=sys.argv[1], num_levels=3)[2].compute()
loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set({BLOCKED!r}))
print("loaded:", loaded, "levels:", len(built.levels))
"""


def test_core_library_and_cli_run_with_qt_and_napari_unavailable(tmp_path, rng):
    path = write_image(tmp_path / "img.zarr", rng.integers(0, 9, size=(32, 32), dtype=np.uint8))
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "loaded: [] levels: 3"


def test_a_build_of_a_common_layout_does_not_import_zarr_python(tmp_path, rng):
    """chunkio reads and writes the common layouts itself, and zarr-python's import is ~0.1 s
    of every build's start-up; it must stay out unless a layout needs it."""
    script = (
        "import sys\n"
        "from napari_pyramids import build_pyramid\n"
        "build_pyramid(zarrurl=sys.argv[1], num_levels=3)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'zarr')[:3])\n"
    )
    data = rng.integers(0, 999, size=(2, 64, 64), dtype=np.uint16)
    for zarr_format in (2, 3):
        path = write_image(tmp_path / f"v{zarr_format}.zarr", data, zarr_format=zarr_format)
        done = subprocess.run(
            [sys.executable, "-c", script, str(path)], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "[]", f"v{zarr_format}: {done.stdout}"
        assert (path / "2").is_dir()
