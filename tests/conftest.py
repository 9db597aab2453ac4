"""Shared fixtures. GUI tests live in tests/qt and need an X display (xvfb-run).

``NAPARI_PYRAMIDS_NO_POSIX=1`` runs the suite without POSIX-only facilities (see
``no_posix_site/sitecustomize.py``): removed here, before the package is imported, and in
every child process through ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

NO_POSIX = os.environ.get("NAPARI_PYRAMIDS_NO_POSIX") == "1"
if NO_POSIX:
    _site = str(Path(__file__).parent / "no_posix_site")
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (_site, os.environ.get("PYTHONPATH")) if p
    )
    sys.path.insert(0, _site)
    if "napari_pyramids" in sys.modules:
        raise RuntimeError("no-POSIX mode: napari_pyramids was imported before conftest.py")
    import importlib.util

    _spec = importlib.util.spec_from_file_location("no_posix", Path(_site) / "sitecustomize.py")
    _module = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_module)  # removes the facilities (the variable is set)

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261125)
