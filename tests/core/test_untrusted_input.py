"""Crafted images and bad calls through the library (issues 5 and 6).

Every row of ``crafted.CASES`` must be refused with exactly its error type and one line
naming the offending entry and the fix, with nothing changed inside or outside the image.
Every row of ``crafted.HARMLESS`` must build, reading through links but never writing through
them, and leave everything outside the image as it was.
"""

from __future__ import annotations

import json
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr

from crafted import CASES, DATA, HARMLESS, Case, folder_snapshot, read_doc
from imaging import file_hashes, level_paths, reference_pyramid
from napari_pyramids import build_pyramid
from napari_pyramids.errors import PyramidError
from napari_pyramids.images import open_image
from napari_pyramids.pyramid.plan import plan_pyramid

BY_ID = {case.id: case for case in CASES}


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_crafted_input_is_refused_with_one_clear_error_and_nothing_written(tmp_path, case: Case):
    crafted = case.build(tmp_path)
    before = crafted.snapshot()
    with pytest.raises(Exception) as raised:  # noqa: PT011 - the exact type is asserted below
        build_pyramid(zarrurl=crafted.zarrurl, **case.kwargs)
    error = raised.value
    assert type(error) is case.error, f"{type(error).__name__}: {error}"
    assert isinstance(error, ValueError)  # seed callers catch ValueError
    message = str(error)
    assert "\n" not in message, message
    assert len(message) < 600, message
    for word in case.message_words(crafted):
        assert word.lower() in message.lower(), f"{word!r} missing from: {message}"
    assert crafted.snapshot() == before


FIX_VERBS = ("fix", "restore", "convert", "replace", "remove", "move", "rename")
FROM_METADATA = [
    case for case in CASES if case.id.startswith(("json-", "level-path-", "dtype-", "codec-"))
]


@pytest.mark.parametrize("case", FROM_METADATA, ids=lambda case: case.id)
def test_a_refusal_of_broken_metadata_also_says_how_to_fix_it(tmp_path, case: Case):
    crafted = case.build(tmp_path)
    with pytest.raises(PyramidError) as raised:
        build_pyramid(zarrurl=crafted.zarrurl, **case.kwargs)
    words = str(raised.value).lower().replace(".", " ").replace(";", " ").split()
    assert any(verb in words for verb in FIX_VERBS), str(raised.value)


@pytest.mark.parametrize(
    "case_id",
    [
        "shape-1e15-voxels",
        "chunk-bigger-than-default-budget",
        "v3-shard-bigger-than-budget",
        "json-bigger-than-16MiB",
        "json-container-bomb",
        "json-number-bomb",
        "listed-levels-10000",
    ],
)
def test_absurd_metadata_is_refused_before_allocating_what_it_claims(tmp_path, case_id):
    case = BY_ID[case_id]
    crafted = case.build(tmp_path)
    tracemalloc.start()
    try:
        with pytest.raises(PyramidError):
            build_pyramid(zarrurl=crafted.zarrurl, **case.kwargs)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # Reading a metadata file whole (at most 16 MiB) is the most a refusal may cost.
    assert peak < 40 * 2**20, f"{peak / 2**20:.1f} MiB"


def test_a_decompression_bomb_costs_no_more_than_its_chunk(tmp_path):
    crafted = BY_ID["chunk-file-zlib-bomb"].build(tmp_path)  # 64 KiB inflating to 64 MiB
    tracemalloc.start()
    try:
        with pytest.raises(PyramidError):
            build_pyramid(zarrurl=crafted.zarrurl, workers=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, f"{peak / 2**20:.1f} MiB"


def _bookkeeping_per_chunk(tmp_path: Path) -> float:
    """What zarr allocates per chunk it reads, measured on 1024 one-voxel chunks."""
    array = zarr.create_array(
        str(tmp_path / "probe"), shape=(32, 32), chunks=(1, 1), dtype="uint16", zarr_format=2,
        compressors=None,
    )  # fmt: skip
    for index in range(32 * 32):
        # Raw chunk files (no codec): far faster than 1024 zarr writes.
        (tmp_path / "probe" / f"{index // 32}.{index % 32}").write_bytes(b"\x01\x00")
    tracemalloc.start()
    try:
        assert (array[...] == 1).all()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak / 1024


def test_tiny_chunks_shrink_blocks_so_zarr_bookkeeping_fits_the_budget(tmp_path):
    """2**46 voxels in 1x1 chunks is legal metadata: the plan must stay small and bounded."""
    crafted = BY_ID["shape-1e15-voxels"].build(tmp_path)
    root = Path(crafted.zarrurl)
    doc = read_doc(root / "0" / ".zarray")
    doc["shape"], doc["chunks"] = [2**23, 2**23], [1, 1]
    (root / "0" / ".zarray").write_text(json.dumps(doc))
    image = open_image(root)
    tracemalloc.start()
    try:
        plan = plan_pyramid(image, num_levels=4, workers=2)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20
    per_chunk = _bookkeeping_per_chunk(tmp_path)
    per_task = plan.memory_budget // plan.workers
    for stage in plan.stages:
        chunks_read = np.prod(stage.block)  # 1x1 chunks: one per voxel
        assert chunks_read * per_chunk < per_task, (stage.block, per_chunk)


@pytest.mark.parametrize("case", HARMLESS, ids=lambda case: case.id)
def test_crafted_image_builds_without_writing_through_links_or_outside(tmp_path, case):
    crafted = case.build(tmp_path)
    root = Path(crafted.zarrurl)
    level0 = level_paths(root)[0]
    outside = [folder_snapshot(folder) for folder in crafted.watch[1:]]
    level0_files = file_hashes(root / level0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_pyramid(zarrurl=root, **case.kwargs)
    said = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    if case.warns:
        assert any(case.warns in text for text in said), said
    assert [folder_snapshot(folder) for folder in crafted.watch[1:]] == outside
    assert file_hashes(root / level0) == level0_files
    paths = level_paths(root)
    assert paths[0] == level0
    reference = reference_pyramid(DATA, (2, 2), len(paths), "mean")
    for path, expected in zip(paths, reference, strict=True):
        np.testing.assert_array_equal(zarr.open_array(str(root / path), mode="r")[...], expected)
    case.check(root, tmp_path)
