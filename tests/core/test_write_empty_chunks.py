"""open_array_kwargs={'write_empty_chunks': True} stores every chunk, as the seed's did."""

from __future__ import annotations

import numpy as np
import zarr

from imaging import reference_pyramid, write_image
from napari_pyramids import build_pyramid


def test_write_empty_chunks_true_writes_every_chunk(tmp_path):
    data = np.zeros((32, 32), dtype=np.uint8)
    data[:8, :8] = 9
    path = write_image(tmp_path / "img.zarr", data, chunks=(4, 4))
    build_pyramid(zarrurl=path, open_array_kwargs={"write_empty_chunks": True})
    files = [f for f in (path / "1").rglob("*") if f.is_file() and not f.name.startswith(".")]
    assert len(files) == 16
    np.testing.assert_array_equal(
        zarr.open_array(str(path / "1"))[...], reference_pyramid(data, (2, 2), 2, "mean")[1]
    )
