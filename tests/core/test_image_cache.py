"""Images read again only when their metadata files change."""

from __future__ import annotations

import os

from napari_pyramids._napari.image_cache import ImageCache
from napari_pyramids._napari.sample_data import write_sample_image
from napari_pyramids.images import open_image


def test_an_unchanged_image_is_read_once(tmp_path):
    path = write_sample_image(tmp_path / "s.ome.zarr", size=64, depth=2)
    cache = ImageCache()
    assert cache.open(path) is cache.open(path)


def test_a_build_changes_what_the_cache_gives(tmp_path):
    from napari_pyramids import build_pyramid

    path = write_sample_image(tmp_path / "s.ome.zarr", size=64, depth=2)
    cache = ImageCache()
    before = cache.open(path)
    build_pyramid(zarrurl=path, num_levels=3)
    after = cache.open(path)
    assert after is not before
    assert after.level_paths == open_image(path).level_paths == ("0", "1", "2")


def test_a_metadata_file_touched_is_read_again(tmp_path):
    path = write_sample_image(tmp_path / "s.ome.zarr", size=64, depth=2)
    cache = ImageCache()
    before = cache.open(path)
    info = os.stat(path / ".zattrs")
    os.utime(path / ".zattrs", ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000))
    assert cache.open(path) is not before
