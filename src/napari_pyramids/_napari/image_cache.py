"""Opened images kept while their metadata files are unchanged.

The widget reads an image's metadata at every setting change (plan, summary, preview); a
spin box held down asks for it many times a second. An image is read again only when one of
its metadata files (the group's and level 0's) changed size or modification time, as a build,
an update or another program does. Images in object stores are read every time. Qt-free.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..images import open_image
from ..ome.image import OmeZarrImage

# The metadata documents of zarr v2 and v3 groups and arrays.
_METADATA_FILES = (".zattrs", ".zgroup", ".zarray", "zarr.json")

Stamp = tuple[tuple[str, int, int], ...]


def metadata_stamp(folder: Path) -> Stamp:
    """(name, size, modification time in ns) of the zarr metadata files in ``folder``."""
    stamp = []
    for name in _METADATA_FILES:
        try:
            info = os.stat(folder / name)
        except OSError:
            continue
        stamp.append((name, info.st_size, info.st_mtime_ns))
    return tuple(stamp)


class ImageCache:
    """The last opened image of each root, reused while its metadata files are unchanged."""

    def __init__(self) -> None:
        self._images: dict[Path, tuple[Stamp, OmeZarrImage]] = {}

    def open(self, root: Path | str) -> OmeZarrImage:
        """The image at ``root``, read again only if its metadata changed.

        Raises
        ------
        PyramidError
            As :func:`~napari_pyramids.images.open_image` (a refusal is never kept).
        """
        if not isinstance(root, Path):  # an object store: no cheap way to see a change
            return open_image(root)
        entry = self._images.get(root)
        if entry is not None and entry[0] == self._stamp(root, entry[1]):
            return entry[1]
        image = open_image(root)
        if isinstance(image.root, Path):
            self._images[root] = (self._stamp(root, image), image)
        return image

    def forget(self) -> None:
        """Read every image again at its next use."""
        self._images.clear()

    @staticmethod
    def _stamp(root: Path, image: OmeZarrImage) -> Stamp:
        return metadata_stamp(root) + metadata_stamp(root / image.level0.path)
