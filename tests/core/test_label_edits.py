"""Painted regions of a Labels layer written to level 0 (no Qt): whole write units, only where
the layer differs from the disk; read back with zarr-python."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from napari.layers import Labels

from imaging import reference_pyramid, write_image
from napari_pyramids import build_pyramid, update_pyramid
from napari_pyramids._napari.editing import LabelEdits, edit_target, level0_changed
from napari_pyramids._napari.layers import layer_data


def _label_image(tmp_path, zarr_format, shards):
    rng = np.random.default_rng(1)
    data = np.repeat(np.repeat(rng.integers(0, 6, (40, 40), dtype=np.uint16), 4, 0), 4, 1)
    root = write_image(
        tmp_path / "seg.zarr",
        data[None],
        zarr_format=zarr_format,
        axes="cyx",
        chunks=(1, 16, 16),
        shards=shards,
        labels=True,
    )
    build_pyramid(zarrurl=root, num_levels=3, method="mode")
    return root, data


def _unit_files(folder):
    return {
        str(f.relative_to(folder)): f.stat().st_mtime_ns
        for f in folder.rglob("*")
        if f.is_file() and f.name not in ("zarr.json", ".zarray", ".zattrs")
    }


@pytest.mark.parametrize(("zarr_format", "shards"), [(2, None), (3, None), (3, (1, 64, 64))])
def test_painting_writes_only_the_units_it_touched_and_an_undo_too(tmp_path, zarr_format, shards):
    root, original = _label_image(tmp_path, zarr_format, shards)
    # The reader's level-0 layer (channel axis of length 1 left out), made single-level.
    data, kwargs, _ = layer_data(root)[0]
    kwargs["multiscale"] = False
    layer = Labels(np.asarray(data[0]), **kwargs)
    target = edit_target(layer)
    assert target is not None
    assert target.squeezed == 0
    edits = LabelEdits(layer, target)
    layer.events.paint.connect(lambda e: edits.record(e.value))
    before = _unit_files(root / "0")

    layer.brush_size = 5
    layer.paint((20, 20), 9)
    written = edits.write()

    level0 = zarr.open_array(root / "0", mode="r")[0]
    np.testing.assert_array_equal(level0, layer.data)
    assert (level0 != original).sum() == (np.asarray(layer.data) != original).sum() > 0
    unit = 64 if shards else 16
    touched = {k for k, t in _unit_files(root / "0").items() if before.get(k) != t}
    changed = np.argwhere(level0 != original)
    assert len(touched) == len({(y // unit, x // unit) for y, x in changed})
    assert written
    assert level0_changed(root)

    report = update_pyramid(zarrurl=root, regions=edits.to_update)
    assert report.status == "updated"
    assert not level0_changed(root)
    expected = reference_pyramid(level0[None], (1, 2, 2), 3, "mode")
    for k in range(3):
        np.testing.assert_array_equal(zarr.open_array(root / str(k), mode="r")[...], expected[k])

    layer.undo()
    assert edits.differs_from_disk()
    edits.write()
    np.testing.assert_array_equal(zarr.open_array(root / "0", mode="r")[0], original)
    assert not edits.differs_from_disk()
