"""Opening what the user names (a path or a URL): the store decided once, the format parsed
strictly, and level 0 checked readable before anything is planned."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .ome.image import OmeZarrImage, read_image
from .storage import Store, check_zarr_reads, open_store


def open_image(
    zarrurl: str | os.PathLike[str] | Store, storage_options: Mapping[str, Any] | None = None
) -> OmeZarrImage:
    """Read an OME-Zarr image group's metadata and level 0, checking every entry.

    Parameters
    ----------
    zarrurl
        Path of the image group (the folder holding ``.zattrs`` or ``zarr.json``), or its
        URL (``s3://bucket/plate.zarr/B/03/0``, ``gs://...``, ``https://...``), or its
        already opened :class:`~napari_pyramids.storage.Store`.
    storage_options
        For a URL: settings of the object store beyond the environment's (``AWS_*``), e.g.
        ``{"endpoint": "http://127.0.0.1:9000", "region": "eu-west-1"}``.

    Returns
    -------
    OmeZarrImage
        The parsed image. A group that holds only a bare array ``0`` and no multiscales
        metadata is described with guessed axes.

    Raises
    ------
    PyramidError
        If the folder is not a zarr group, its metadata is malformed, or level 0 is missing
        or unsupported.
    """
    image = read_image(open_store(zarrurl, storage_options))
    check_zarr_reads(image.store, image.level0)
    return image
