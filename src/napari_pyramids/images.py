"""Opening what the user names (a path today, a URL next): the store decided once, the
format parsed strictly, and level 0 checked readable before anything is planned."""

from __future__ import annotations

import os

from .ome.image import OmeZarrImage, read_image
from .storage import check_zarr_reads, open_store


def open_image(zarrurl: str | os.PathLike[str]) -> OmeZarrImage:
    """Read an OME-Zarr image group's metadata and level 0, checking every entry.

    Parameters
    ----------
    zarrurl
        Path of the image group (the folder holding ``.zattrs`` or ``zarr.json``).

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
    image = read_image(open_store(zarrurl))
    check_zarr_reads(image.store, image.level0)
    return image
