"""The napari reader contribution: OME-Zarr images (NGFF 0.4 / 0.5) and their labels.

Thin over :func:`napari_pyramids._napari.layers.layer_data`, which returns plain layer tuples.
Images are folders or URLs (``s3://``, ``gs://``, ``https://``), configured by the
environment (``AWS_*``) as the command line is.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ..errors import PyramidError
from ..storage import open_store
from ..untrusted import URL_SCHEME
from .layers import LayerData, layer_data

_GROUP_FILES = ("zarr.json", ".zattrs", ".zgroup")


def get_reader(path: str | list[str]) -> Callable[[Any], list[LayerData]] | None:
    """Our reader if ``path`` is one zarr group folder, else None (napari tries others)."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    if isinstance(path, str) and URL_SCHEME.match(path):
        return read_ome_zarr if _is_group_url(path) else None
    if not isinstance(path, str) or not os.path.isdir(path):
        return None
    if not any(os.path.isfile(os.path.join(path, name)) for name in _GROUP_FILES):
        return None
    return read_ome_zarr


def _is_group_url(url: str) -> bool:
    """Whether ``url`` is a zarr group in a store we can open (a few HEAD requests)."""
    try:
        store = open_store(url)
        return any(store.is_file(name) for name in _GROUP_FILES)
    except PyramidError:
        return False


def read_ome_zarr(path: str | list[str]) -> list[LayerData]:
    """The layers of the image at ``path``: one per channel, then its labels."""
    if isinstance(path, list):
        path = path[0]
    return layer_data(path)
