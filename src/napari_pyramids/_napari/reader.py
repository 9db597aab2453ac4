"""The napari reader contribution: OME-Zarr images (NGFF 0.4 / 0.5) and their labels.

Thin over :func:`napari_pyramids._napari.layers.layer_data`, which returns plain layer tuples.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from .layers import LayerData, layer_data

_GROUP_FILES = ("zarr.json", ".zattrs", ".zgroup")


def get_reader(path: str | list[str]) -> Callable[[Any], list[LayerData]] | None:
    """Our reader if ``path`` is one zarr group folder, else None (napari tries others)."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    if not isinstance(path, str) or not os.path.isdir(path):
        return None
    if not any(os.path.isfile(os.path.join(path, name)) for name in _GROUP_FILES):
        return None
    return read_ome_zarr


def read_ome_zarr(path: str | list[str]) -> list[LayerData]:
    """The layers of the image at ``path``: one per channel, then its labels."""
    if isinstance(path, list):
        path = path[0]
    return layer_data(path)
