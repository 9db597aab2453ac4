"""Whole datasets: plates, wells and collections written by other tools, built in one call,
with their labels kept to as many levels as their images (NGFF 0.4 and 0.5)."""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest

from imaging import reference_pyramid, write_image
from napari_pyramids import PyramidError, build_dataset, build_pyramid
from napari_pyramids.dataset_build import BUILT, CANCELLED, COMPLETE, REFUSED, SKIPPED
from napari_pyramids.datasets import find_images, labels_out_of_step, place_name
from napari_pyramids.images import open_image
from plates import (
    bioformats2raw_collection,
    listed_levels,
    ngff_zarr_plate,
    ome_zarr_plate,
    read_level,
    validate_image,
    validate_plate,
)

VERSIONS = [pytest.param("0.4", id="ngff-0.4"), pytest.param("0.5", id="ngff-0.5")]


def assert_levels_equal_numpy(root, data, levels, factors=(1, 2, 2), label_factors=(2, 2)):
    """Every image's levels equal the numpy reference (mean; mode for labels)."""
    for name, level0 in data.items():
        is_label = "/labels/" in name
        expected = reference_pyramid(
            level0, label_factors if is_label else factors, levels, "mode" if is_label else "mean"
        )
        assert len(listed_levels(root / name)) == levels, name
        for k in range(levels):
            np.testing.assert_array_equal(read_level(root / name, k), expected[k], err_msg=name)


@pytest.mark.parametrize("version", VERSIONS)
def test_ome_zarr_py_plate_builds_every_field_and_its_labels(tmp_path, rng, version):
    root = tmp_path / "plate.zarr"
    data = ome_zarr_plate(root, version, rng)
    report = build_dataset(root, num_levels=3)
    assert report.ok
    assert [r.name for r in report.results] == [
        "A/1/0", "A/1/0/labels/cells", "A/1/1", "B/2/0", "B/2/1",
    ]  # fmt: skip
    assert {r.status for r in report.results} == {BUILT}
    assert_levels_equal_numpy(root, data, 3)
    validate_plate(root)
    for name in data:
        if "/labels/" not in name:
            validate_image(root / name)


@pytest.mark.parametrize("version", VERSIONS)
def test_ngff_zarr_plate_builds_every_field(tmp_path, rng, version):
    root = tmp_path / "plate.ome.zarr"
    data = ngff_zarr_plate(root, version, rng)
    report = build_dataset(root, num_levels=2, method="max")
    assert report.ok, report.table()
    assert report.count(BUILT) == 4
    for name, level0 in data.items():
        assert listed_levels(root / name) == ["scale0/image", "scale1/image"]
        np.testing.assert_array_equal(
            read_level(root / name, 1), reference_pyramid(level0, (1, 2, 2), 2, "max")[1]
        )
        validate_image(root / name)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("listed", [True, False], ids=["series-listed", "series-numbered"])
def test_bioformats2raw_collection_builds_every_series(tmp_path, rng, version, listed):
    root = tmp_path / "converted.zarr"
    data = bioformats2raw_collection(root, version, rng, listed=listed)
    dataset = find_images(root)
    assert dataset.node.kind == "bioformats2raw collection"
    assert [image.name for image in dataset.images] == ["0", "1", "2"]
    report = build_dataset(dataset, num_levels=3)
    assert report.ok
    assert_levels_equal_numpy(root, data, 3)


def test_a_well_builds_its_fields(tmp_path, rng):
    root = tmp_path / "plate.zarr"
    data = ome_zarr_plate(root, "0.5", rng, wells=("A/1", "A/2"), label_fields=())
    report = build_dataset(root / "A" / "2", num_levels=2)
    assert [(r.name, r.status) for r in report.results] == [("0", BUILT), ("1", BUILT)]
    assert listed_levels(root / "A/1/0") == ["s0"]  # the other well is not touched
    assert_levels_equal_numpy(root, {k: v for k, v in data.items() if k.startswith("A/2")}, 2)


def test_a_folder_of_images_in_both_formats_is_searched(tmp_path, rng):
    a = rng.integers(0, 99, size=(32, 32), dtype=np.uint8)
    b = rng.integers(0, 99, size=(3, 32, 32), dtype=np.uint16)
    write_image(tmp_path / "batch" / "a.zarr", a)
    write_image(tmp_path / "batch" / "day2" / "b.zarr", b, zarr_format=3)
    (tmp_path / "batch" / "notes.txt").write_text("not an image\n")
    (tmp_path / "batch" / "empty").mkdir()
    dataset = find_images(tmp_path / "batch")
    assert dataset.node.kind == "folder"
    assert [image.name for image in dataset.images] == ["a.zarr", "day2/b.zarr"]
    report = build_dataset(dataset, num_levels=2)
    assert report.ok
    np.testing.assert_array_equal(
        read_level(tmp_path / "batch/day2/b.zarr", 1),
        reference_pyramid(b, (1, 2, 2), 2, "mean")[1],
    )


def test_rerun_skips_complete_images_and_finishes_the_rest(tmp_path, rng):
    root = tmp_path / "plate.zarr"
    data = ome_zarr_plate(root, "0.4", rng)
    build_pyramid(zarrurl=root / "A/1/1", num_levels=3)  # built before, as the dataset would
    first = build_dataset(root, num_levels=3)
    assert [(r.name, r.status) for r in first.results if r.name.startswith("A/1/1")] == [
        ("A/1/1", COMPLETE)
    ]
    second = build_dataset(root, num_levels=3)
    assert second.ok
    assert {r.status for r in second.results} == {COMPLETE}
    assert all(r.levels == 3 for r in second.results)
    assert_levels_equal_numpy(root, data, 3)


def test_overwrite_rerun_skips_images_it_already_rebuilt(tmp_path, rng):
    root = tmp_path / "plate.zarr"
    data = ome_zarr_plate(root, "0.5", rng, label_fields=())
    assert build_dataset(root, num_levels=2, method="nearest").ok
    rebuilt = build_dataset(root, num_levels=3, overwrite=True)
    assert {r.status for r in rebuilt.results} == {BUILT}
    again = build_dataset(root, num_levels=3, overwrite=True)
    assert {r.status for r in again.results} == {COMPLETE}
    assert_levels_equal_numpy(root, data, 3)


def test_a_refused_image_does_not_stop_the_others(tmp_path, rng):
    root = tmp_path / "plate.zarr"
    data = ome_zarr_plate(root, "0.4", rng)
    # One field already has a pyramid of another depth: refused without overwrite.
    build_pyramid(zarrurl=root / "B/2/0", num_levels=2)
    report = build_dataset(root, num_levels=3)
    assert not report.ok
    statuses = {r.name: r for r in report.results}
    assert statuses["B/2/0"].status == REFUSED
    assert "already exists" in statuses["B/2/0"].message
    assert "--overwrite" in statuses["B/2/0"].message or "overwrite" in statuses["B/2/0"].message
    built = {k: v for k, v in data.items() if not k.startswith("B/2/0")}
    assert_levels_equal_numpy(root, built, 3)
    assert "1 refused" in report.table()


def test_labels_of_a_refused_image_are_skipped(tmp_path, rng):
    root = tmp_path / "plate.zarr"
    ome_zarr_plate(root, "0.5", rng, wells=("A/1",), fields=1)
    (root / "A/1/0/s0/zarr.json").write_text("{broken")
    report = build_dataset(root, num_levels=2)
    assert [(r.name, r.status) for r in report.results] == [
        ("A/1/0", REFUSED), ("A/1/0/labels/cells", SKIPPED)
    ]  # fmt: skip
    assert "not valid JSON" in report.results[0].message


def test_labels_follow_the_image_with_mode_whatever_the_method(tmp_path, rng):
    image = tmp_path / "img.zarr"
    data = ome_zarr_plate(tmp_path / "p.zarr", "0.4", rng, wells=("A/1",), fields=1)
    os.rename(tmp_path / "p.zarr/A/1/0", image)
    report = build_dataset(image, num_levels=3, method="mean")
    assert [(r.name, r.status, r.levels) for r in report.results] == [
        (".", BUILT, 3),
        ("labels/cells", BUILT, 3),
    ]
    levels = report.results[0].levels
    label = data["A/1/0/labels/cells"]
    expected = reference_pyramid(label, (2, 2), levels, "mode")
    for k in range(levels):
        np.testing.assert_array_equal(read_level(image / "labels/cells", k), expected[k])
    validate_image(image)


def test_labels_out_of_step_name_the_command_that_fixes_them(tmp_path, rng):
    root = tmp_path / "plate.zarr"
    ome_zarr_plate(root, "0.5", rng, wells=("A/1",), fields=1)
    image = root / "A/1/0"
    report = build_dataset(image, num_levels=3, with_labels=False)
    assert [r.name for r in report.results] == ["."]
    (mismatch,) = labels_out_of_step(open_image(image))
    assert (mismatch.image_levels, mismatch.label_levels) == (3, 1)
    assert mismatch.fix == f"napari-pyramids build {image}/labels/cells --levels 3"
    assert "label image" in mismatch.message
    assert mismatch.fix in mismatch.message
    # The label image on its own says the same about its image.
    assert labels_out_of_step(open_image(image / "labels/cells"))[0].fix == mismatch.fix
    from napari_pyramids.cli import main

    assert main([*mismatch.fix.split()[1:], "--quiet"]) == 0
    assert labels_out_of_step(open_image(image)) == []
    validate_image(image)


def test_cancel_stops_every_image_and_leaves_each_whole_or_untouched(tmp_path, rng):
    root = tmp_path / "plate.zarr"
    ome_zarr_plate(root, "0.4", rng, wells=("A/1", "A/2", "B/1", "B/2"), label_fields=())
    stop = threading.Event()
    seen = []

    def progress(step):
        seen.append(step)
        if step.images_done >= 2:
            stop.set()

    report = build_dataset(root, num_levels=2, progress=progress, cancel=stop, images_at_once=1)
    assert report.cancelled
    assert not report.ok
    statuses = [r.status for r in report.results]
    assert statuses.count(BUILT) >= 2
    assert CANCELLED in statuses
    for result in report.results:
        levels = listed_levels(result.path)
        assert len(levels) == (2 if result.status == BUILT else 1)
        assert not [
            n
            for n in os.listdir(result.path)
            if (n.startswith(".napari-pyramids") and n != ".napari-pyramids-record.json")
        ]
    assert seen[-1].images_total == 8
    assert build_dataset(root, num_levels=2).ok


def test_memory_budget_is_shared_by_the_images_built_at_once(tmp_path, rng):
    from napari_pyramids.dataset_build import share_of, slots_for
    from napari_pyramids.options import BuildOptions

    options = BuildOptions(memory_budget="256MiB", workers=2)
    slots = slots_for(96, options, None)
    share = share_of(options, slots)
    assert slots > 1
    assert share.memory_budget * slots <= options.memory_budget
    assert share.workers * slots <= max(slots, options.workers)
    assert slots_for(1, options, None) == 1
    assert share_of(options, 1).memory_budget == options.memory_budget
    with pytest.raises(PyramidError, match="images_at_once"):
        slots_for(4, options, 0)


# --------------------------------------------------------------------------- untrusted


@pytest.mark.parametrize(
    ("well_path", "words"),
    [
        ("../outside", "'..' component"),
        ("/etc", "is absolute"),
        ("A/.hidden", "hidden component"),
        (7, "must be a string"),
    ],
)
def test_plate_paths_must_stay_inside_the_plate(tmp_path, rng, well_path, words):
    root = tmp_path / "plate.zarr"
    ome_zarr_plate(root, "0.4", rng, label_fields=())
    attrs = json.loads((root / ".zattrs").read_text())
    attrs["plate"]["wells"][1]["path"] = well_path
    (root / ".zattrs").write_text(json.dumps(attrs))
    with pytest.raises(PyramidError, match="a plate") as info:
        find_images(root)
    assert words in str(info.value)
    assert "plate.wells[1]" in str(info.value)


def test_a_listed_well_that_is_missing_or_a_link_is_refused_alone(tmp_path, rng):
    root = tmp_path / "plate.zarr"
    ome_zarr_plate(root, "0.5", rng, wells=("A/1", "A/2", "B/1"), fields=1, label_fields=())
    outside = tmp_path / "outside"
    os.rename(root / "A/2", outside)
    os.symlink(outside, root / "A/2")
    os.rename(root / "B/1", tmp_path / "gone")
    report = build_dataset(root, num_levels=2)
    results = {r.name: r for r in report.results}
    assert results["A/1/0"].status == BUILT
    assert results["A/2"].status == REFUSED
    assert "symbolic link" in results["A/2"].message
    assert results["B/1"].status == REFUSED
    assert "does not exist" in results["B/1"].message
    assert listed_levels(outside / "0") == ["s0"]  # nothing written through the link


def test_a_well_listing_a_plate_is_refused_naming_both(tmp_path, rng):
    root = tmp_path / "plate.zarr"
    ome_zarr_plate(root, "0.4", rng, wells=("A/1",), fields=1, label_fields=())
    attrs = json.loads((root / "A/1/.zattrs").read_text())
    attrs["well"]["images"].append({"path": "../../"})
    (root / "A/1/.zattrs").write_text(json.dumps(attrs))
    with pytest.raises(PyramidError, match=r"a well\).*well.images\[1\]"):
        find_images(root / "A/1")


def test_an_image_needing_more_than_its_share_is_built_alone_with_the_whole_budget(tmp_path, rng):
    from faultkit import vector_pyramid
    from napari_pyramids.errors import MemoryBudgetError

    data = [rng.integers(0, 4000, size=(2048, 2048), dtype=np.uint16) for _ in range(4)]
    for k, plane in enumerate(data):
        write_image(tmp_path / "batch" / f"{k}.zarr", plane, chunks=(2048, 2048))
    # One 8 MiB chunk needs more than a quarter of 64 MiB...
    with pytest.raises(MemoryBudgetError):
        build_pyramid(
            zarrurl=tmp_path / "batch/0.zarr", num_levels=2, memory_budget="16MiB", workers=1
        )
    # ...so among 4 images at once each waits, then builds alone: nothing is refused.
    report = build_dataset(
        tmp_path / "batch", num_levels=3, memory_budget="64MiB", workers=1, images_at_once=4
    )
    assert [(r.name, r.status) for r in report.results] == [(f"{k}.zarr", BUILT) for k in range(4)]
    assert all("built alone" in r.message for r in report.results)
    for k, plane in enumerate(data):
        expected = vector_pyramid(plane, (2, 2), 3, "mean")
        for level in (1, 2):
            np.testing.assert_array_equal(
                read_level(tmp_path / "batch" / f"{k}.zarr", level), expected[level]
            )


def test_build_pyramid_on_an_image_with_labels_warns_with_the_fix(tmp_path, rng):
    root = tmp_path / "plate.zarr"
    ome_zarr_plate(root, "0.4", rng, wells=("A/1",), fields=1)
    image = root / "A/1/0"
    with pytest.warns(UserWarning, match="has 1 level but its image") as caught:
        build_pyramid(zarrurl=image, num_levels=2)
    assert f"run: napari-pyramids build {image}/labels/cells --levels 2" in str(caught[0].message)
    with pytest.warns(UserWarning, match="has 3 levels but its image"):
        build_pyramid(zarrurl=image / "labels/cells", num_levels=3)


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_images_in_a_plate_are_named_by_their_place(tmp_path, rng, version):
    plate = tmp_path / "plate.zarr"
    ome_zarr_plate(plate, version, rng, wells=("A/1", "B/2"), fields=2, label_fields=("B/2/1",))
    lone = write_image(tmp_path / "lone.zarr", np.zeros((8, 8), np.uint8))

    found = find_images(plate)
    names = {image.name: place_name(open_image(image.path)) for image in found.images}
    for image in found.images:
        for label in image.labels:
            names[image.label_name(label)] = place_name(open_image(image.label_path(label)))

    assert names == {name: f"plate.zarr/{name}" for name in names}
    assert {"A/1/0", "B/2/1", "B/2/1/labels/cells"} <= set(names)
    assert place_name(open_image(lone)) == "lone.zarr"
