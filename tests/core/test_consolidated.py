"""Consolidated metadata stays true: readers that trust it see every new level.

Images come from other writers: ngff-zarr (which consolidates by default), zarr-python
followed by ``zarr.consolidate_metadata``, and plates written by ome-zarr-py then
consolidated at the plate root. After a build, the consolidated document must equal what
``zarr.consolidate_metadata`` makes of a copy of the result (the independent reference),
zarr must open every new level through it with the right shape, chunks and values, and
ome-zarr-models, ngff-zarr and bioio-ome-zarr must read the result. A SIGKILL at any store
step must leave every consolidated document listing only whole levels with their true
metadata, and the same call run again must finish the job.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from faultkit import StepSchedule, report, start_build, vector_pyramid
from imaging import file_hashes, level_paths, tree_snapshot, write_image
from napari_pyramids.api import build_pyramid
from napari_pyramids.errors import PyramidError

# zarr-python warns that v3 consolidated metadata is not in the spec: that is the point here.
# zarr-python says, consolidating a killed build's image, that a level folder whose group
# file is not written yet is no zarr node: it skips it, as every reader does.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Consolidated metadata:UserWarning"),
    pytest.mark.filterwarnings("ignore:Object at .* is not recognized:UserWarning"),
]

DATA = np.random.default_rng(12).integers(1, 4096, size=(2, 40, 48), dtype=np.uint16)
FACTORS = (1, 2, 2)


# --------------------------------------------------------------------------- writers


@dataclass(frozen=True)
class Dataset:
    """An image inside a folder tree, and the groups whose consolidated metadata list it."""

    image: Path
    consolidated: tuple[Path, ...]  # groups holding consolidated metadata, innermost first
    data: np.ndarray = field(default_factory=lambda: DATA)
    # Labels are built with nearest (mean would invent label ids, and is refused).
    method: str = "mean"

    def pyramid(self, num_levels: int, method: str | None = None) -> list[np.ndarray]:
        return vector_pyramid(self.data, FACTORS, num_levels, method or self.method)

    @property
    def top(self) -> Path:
        return self.consolidated[-1] if self.consolidated else self.image

    def prefix(self, group: Path) -> str:
        return self.image.relative_to(group).as_posix() if group != self.image else ""


def ngff_zarr_image(tmp: Path, zarr_format: int) -> Dataset:
    import ngff_zarr as nz

    path = tmp / "data" / "img.zarr"
    image = nz.to_ngff_image(DATA, dims=["z", "y", "x"])
    multiscales = nz.to_multiscales(image, scale_factors=[], chunks=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nz.to_ngff_zarr(path, multiscales, version="0.4" if zarr_format == 2 else "0.5")
    return Dataset(path, (path,))


def zarr_python_image(tmp: Path, zarr_format: int) -> Dataset:
    path = write_image(
        tmp / "data" / "img.zarr", DATA, zarr_format=zarr_format, chunks=(1, 16, 16)
    )
    zarr.consolidate_metadata(path)
    return Dataset(path, (path,))


def ome_zarr_plate(tmp: Path, zarr_format: int, consolidate: bool = True) -> Dataset:
    """A 1x2 plate (one field per well) by ome-zarr-py, consolidated at the plate root."""
    from ome_zarr.format import FormatV04, FormatV05
    from ome_zarr.writer import write_image as ome_write_image
    from ome_zarr.writer import write_plate_metadata, write_well_metadata

    fmt = FormatV04() if zarr_format == 2 else FormatV05()
    path = tmp / "data" / "plate.zarr"
    plate = zarr.open_group(path, mode="w", zarr_format=zarr_format)
    write_plate_metadata(plate, ["A"], ["1", "2"], ["A/1", "A/2"], fmt=fmt)
    for well_name in ("1", "2"):
        well = plate.require_group(f"A/{well_name}")
        write_well_metadata(well, [{"path": "0"}], fmt=fmt)
        field = well.require_group("0")
        ome_write_image(
            DATA,
            field,
            axes="zyx",
            scale_factors=(),
            fmt=fmt,
            storage_options={"chunks": (1, 16, 16)},
        )
    if consolidate:
        zarr.consolidate_metadata(path)
    return Dataset(path / "A" / "1" / "0", (path,) if consolidate else ())


def bioformats2raw_collection(tmp: Path, zarr_format: int) -> Dataset:
    """A bioformats2raw layout (images 0 and 1 below a root group), consolidated at the root."""
    path = tmp / "data" / "collection.zarr"
    root = zarr.open_group(path, mode="w", zarr_format=zarr_format)
    layout = {"bioformats2raw.layout": 3}
    root.attrs.update(layout if zarr_format == 2 else {"ome": {"version": "0.5", **layout}})
    for name in ("0", "1"):
        write_image(path / name, DATA, zarr_format=zarr_format, chunks=(1, 16, 16))
    zarr.consolidate_metadata(path)
    return Dataset(path / "0", (path,))


def image_with_labels(tmp: Path, zarr_format: int) -> Dataset:
    """A label image built on its own, below an image consolidated at its root."""
    path = write_image(tmp / "data" / "img.zarr", DATA, zarr_format=zarr_format)
    labels = zarr.open_group(path / "labels", mode="w", zarr_format=zarr_format)
    names = {"labels": ["cells"]}
    labels.attrs.update(names if zarr_format == 2 else {"ome": {"version": "0.5", **names}})
    cells = (DATA % 7).astype(np.uint8)
    write_image(path / "labels" / "cells", cells, zarr_format=zarr_format, labels=True)
    zarr.consolidate_metadata(path)
    return Dataset(path / "labels" / "cells", (path,), cells, "nearest")


WRITERS: dict[str, Callable[[Path, int], Dataset]] = {
    "ngff-zarr": ngff_zarr_image,
    "zarr-python": zarr_python_image,
    "ome-zarr-plate": ome_zarr_plate,
    "bioformats2raw": bioformats2raw_collection,
    "labels": image_with_labels,
}
CASES = [
    pytest.param(writer, zarr_format, id=f"{writer}-v{zarr_format}")
    for writer in WRITERS
    for zarr_format in (2, 3)
]


# --------------------------------------------------------------------------- references


def entries(group: Path) -> dict[str, Any]:
    """The consolidated entries of a group, as stored."""
    if (group / "zarr.json").exists():
        return json.loads((group / "zarr.json").read_text())["consolidated_metadata"]["metadata"]
    return json.loads((group / ".zmetadata").read_text())["metadata"]


def has_consolidated(group: Path) -> bool:
    if (group / "zarr.json").exists():
        return "consolidated_metadata" in json.loads((group / "zarr.json").read_text())
    return (group / ".zmetadata").exists()


def reconsolidated(group: Path, scratch: Path) -> dict[str, Any]:
    """What zarr-python's consolidate_metadata makes of a copy of the group as it is now
    (without our lock and build folders, which no reader looks at)."""
    copy = scratch / "reference" / group.name
    shutil.rmtree(copy.parent, ignore_errors=True)
    shutil.copytree(group, copy, ignore=shutil.ignore_patterns(".napari-pyramids*"))
    zarr.consolidate_metadata(copy)
    found = entries(copy)
    shutil.rmtree(copy.parent)
    return found


def listed_levels(dataset: Dataset, group: Path, found: dict[str, Any]) -> list[str]:
    """The level paths the image's group entry lists in a consolidated document."""
    prefix = dataset.prefix(group)
    if (group / "zarr.json").exists():
        if prefix:
            attributes = found[prefix]["attributes"]
        else:
            attributes = json.loads((group / "zarr.json").read_text())["attributes"]
        ngff = attributes["ome"]
    else:
        ngff = found["/".join(p for p in (prefix, ".zattrs") if p)]
    return [d["path"] for d in ngff["multiscales"][0]["datasets"]]


def array_entry(found: dict[str, Any], node: str, zarr_format: int) -> Any:
    return found.get(node if zarr_format == 3 else f"{node}/.zarray")


def is_array_key(key: str, value: Any) -> bool:
    return key.endswith("/.zarray") or (
        isinstance(value, dict) and value.get("node_type") == "array"
    )


def node_of(key: str) -> str:
    return key.removesuffix("/.zarray")


def check_readers_see(
    dataset: Dataset, zarr_format: int, levels: list[np.ndarray], scratch: Path
) -> list[str]:
    """Every consolidated document lists whole levels whose metadata and values are true.

    Returns the level paths they list (all documents must agree).
    """
    seen = None
    for group in dataset.consolidated:
        found = entries(group)
        reference = reconsolidated(group, scratch)
        prefix = dataset.prefix(group)
        # No array entry of the image may describe anything but what is on disk.
        for key, value in found.items():
            if is_array_key(key, value) and (not prefix or key.startswith(prefix + "/")):
                assert reference.get(key) == value, f"{group}: entry {key} is not the array"
        paths = listed_levels(dataset, group, found)
        opened = zarr.open_group(group, mode="r", use_consolidated=True)
        for path, want in zip(paths, levels, strict=False):
            node = "/".join(p for p in (prefix, path) if p)
            assert array_entry(found, node, zarr_format) is not None, f"{node} unlisted"
            array = opened[node]
            assert array.shape == want.shape, (group, node)
            np.testing.assert_array_equal(array[...], want)
        assert seen is None or seen == paths, "consolidated documents disagree"
        seen = paths
    return seen or []


def validate_with_readers(dataset: Dataset, zarr_format: int, num_levels: int) -> None:
    """ome-zarr-models (through consolidated metadata), ngff-zarr and bioio-ome-zarr."""
    group = zarr.open_group(dataset.top, mode="r", use_consolidated=True)
    prefix = dataset.prefix(dataset.top)
    image_group = group[prefix] if prefix else group
    if zarr_format == 2:
        from ome_zarr_models.v04.image import Image
    else:
        from ome_zarr_models.v05.image import Image
    Image.from_zarr(image_group)
    import ngff_zarr as nz

    assert len(nz.from_ngff_zarr(dataset.image).images) == num_levels
    bioio = pytest.importorskip("bioio_ome_zarr")
    reader = bioio.Reader(str(dataset.image))
    assert len(reader.resolution_levels) == num_levels
    reader.set_resolution_level(num_levels - 1)
    assert reader.shape[-2:] == dataset.pyramid(num_levels)[-1].shape[-2:]


# --------------------------------------------------------------------------- builds


@pytest.mark.parametrize(("writer", "zarr_format"), CASES)
def test_readers_of_consolidated_metadata_see_every_new_level(tmp_path, writer, zarr_format):
    dataset = WRITERS[writer](tmp_path, zarr_format)
    level0_before = {g: entries(g) for g in dataset.consolidated}
    level0_path = listed_levels(dataset, dataset.consolidated[0], entries(dataset.consolidated[0]))
    level0_files = file_hashes(dataset.image / level0_path[0])

    build_pyramid(zarrurl=dataset.image, num_levels=3, method=dataset.method)

    paths = check_readers_see(dataset, zarr_format, dataset.pyramid(3), tmp_path)
    assert len(paths) == 3
    for group in dataset.consolidated:
        found = entries(group)
        # The independent reference: zarr-python consolidating a copy of the result.
        assert found == reconsolidated(group, tmp_path)
        # Chunks as the new levels' own metadata says, read both ways.
        prefix = dataset.prefix(group)
        opened = zarr.open_group(group, mode="r", use_consolidated=True)
        for path in paths[1:]:
            node = "/".join(p for p in (prefix, path) if p)
            direct = zarr.open_array(dataset.image / path, mode="r")
            assert (opened[node].shape, opened[node].chunks) == (direct.shape, direct.chunks)
        # Level 0's entries are exactly as they were.
        node0 = "/".join(p for p in (prefix, paths[0]) if p)
        for key, value in level0_before[group].items():
            if key == node0 or key.startswith(node0 + "/"):
                assert found[key] == value
    assert file_hashes(dataset.image / paths[0]) == level0_files
    validate_with_readers(dataset, zarr_format, 3)


@pytest.mark.parametrize(("writer", "zarr_format"), CASES)
def test_overwrite_drops_the_entries_of_replaced_and_dropped_levels(tmp_path, writer, zarr_format):
    dataset = WRITERS[writer](tmp_path, zarr_format)
    build_pyramid(zarrurl=dataset.image, num_levels=4, method="nearest")
    old = check_readers_see(dataset, zarr_format, dataset.pyramid(4, "nearest"), tmp_path)
    assert len(old) == 4

    build_pyramid(zarrurl=dataset.image, num_levels=2, overwrite=True, method=dataset.method)

    paths = check_readers_see(dataset, zarr_format, dataset.pyramid(2), tmp_path)
    assert paths == old[:2]
    for group in dataset.consolidated:
        found = entries(group)
        assert found == reconsolidated(group, tmp_path)
        prefix = dataset.prefix(group)
        for path in old[2:]:
            node = "/".join(p for p in (prefix, path) if p)
            assert not [k for k in found if k == node or k.startswith(node + "/")], node
    validate_with_readers(dataset, zarr_format, 2)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_where_nothing_is_consolidated_none_is_written(tmp_path, zarr_format):
    dataset = ome_zarr_plate(tmp_path, zarr_format, consolidate=False)
    plate = dataset.image.parents[2]
    outside_image = {
        k: v for k, v in tree_snapshot(plate).items() if not k.startswith("plate.zarr/A/1/0")
    }
    build_pyramid(zarrurl=dataset.image, num_levels=3)
    for group in [dataset.image, *dataset.image.parents[:3]]:
        assert not has_consolidated(group), group
    after = tree_snapshot(plate)
    assert {
        k: v for k, v in after.items() if not k.startswith("plate.zarr/A/1/0")
    } == outside_image


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_sibling_images_built_at_once_keep_each_others_entries(tmp_path, zarr_format):
    dataset = ome_zarr_plate(tmp_path, zarr_format)
    plate = dataset.top
    sibling = plate / "A" / "2" / "0"
    errors: list[BaseException] = []

    def build(image: Path) -> None:
        try:
            build_pyramid(zarrurl=image, num_levels=3)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=build, args=(p,)) for p in (dataset.image, sibling)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert entries(plate) == reconsolidated(plate, tmp_path)
    for image in (dataset.image, sibling):
        check_readers_see(
            Dataset(image, (plate,)),
            zarr_format,
            vector_pyramid(DATA, FACTORS, 3, "mean"),
            tmp_path,
        )
    assert not [
        n
        for n in os.listdir(plate)
        if (n.startswith(".napari-pyramids") and n != ".napari-pyramids-record.json")
    ]


def test_an_entry_someone_else_changed_meanwhile_is_left_alone_with_a_warning(tmp_path):
    from napari_pyramids import engine

    dataset = ome_zarr_plate(tmp_path, 2)
    plate = dataset.top
    gen = engine.iter_build(dataset.image, num_levels=3)
    next(gen)  # planned and writing: the plate's entries of the image were recorded
    document = json.loads((plate / ".zmetadata").read_text())
    document["metadata"]["A/1/0/.zattrs"]["edited"] = "by someone else"
    (plate / ".zmetadata").write_text(json.dumps(document))
    with pytest.warns(UserWarning, match="changed since the build started"):
        for _ in gen:
            pass
    assert json.loads((plate / ".zmetadata").read_text()) == document
    # The image itself is built, and its own metadata lists every level.
    attrs = zarr.open_group(dataset.image, mode="r", use_consolidated=False).attrs
    assert len(attrs["multiscales"][0]["datasets"]) == 3


# --------------------------------------------------------------------------- untrusted


def test_a_consolidated_file_that_is_a_link_is_not_written_through(tmp_path):
    dataset = ome_zarr_plate(tmp_path, 2)
    plate = dataset.top
    outside = tmp_path / "outside.json"
    shutil.move(plate / ".zmetadata", outside)
    os.symlink(outside, plate / ".zmetadata")
    before = outside.read_bytes()
    with pytest.warns(UserWarning, match="symbolic link"):
        build_pyramid(zarrurl=dataset.image, num_levels=3)
    assert outside.read_bytes() == before
    assert os.path.islink(plate / ".zmetadata")
    # Replacing levels it lists would leave it wrong: that build is refused.
    image_before = tree_snapshot(dataset.image)
    with pytest.raises(PyramidError, match=r"symbolic link.*Nothing was written"):
        build_pyramid(zarrurl=dataset.image, num_levels=2, overwrite=True)
    assert outside.read_bytes() == before
    assert tree_snapshot(dataset.image) == image_before


def test_a_parent_folder_that_is_a_link_ends_the_walk_up(tmp_path):
    dataset = ome_zarr_plate(tmp_path, 3)
    plate = dataset.top
    # The well lives elsewhere and is linked into the plate: writing "above" it through
    # the link would be writing where the link says, so the walk up stops there.
    real = tmp_path / "elsewhere" / "1"
    real.parent.mkdir()
    shutil.move(plate / "A" / "1", real)
    os.symlink(real, plate / "A" / "1")
    before = (plate / "zarr.json").read_bytes()
    build_pyramid(zarrurl=plate / "A" / "1" / "0", num_levels=3)
    assert (plate / "zarr.json").read_bytes() == before
    assert (
        len(zarr.open_group(real / "0", mode="r").attrs["ome"]["multiscales"][0]["datasets"]) == 3
    )
    # A sibling without links on the way is kept in the plate's consolidated metadata.
    sibling = Dataset(plate / "A" / "2" / "0", (plate,))
    build_pyramid(zarrurl=sibling.image, num_levels=3)
    assert len(listed_levels(sibling, plate, entries(plate))) == 3


def test_an_oversized_parent_document_is_not_read(tmp_path):
    from napari_pyramids.untrusted import CONSOLIDATED_CAPS

    dataset = ome_zarr_plate(tmp_path, 3)
    plate = dataset.top
    with open(plate / "zarr.json", "r+b") as handle:
        # Sparse: the size alone makes it too big to read.
        handle.truncate(CONSOLIDATED_CAPS["max_bytes"] + 1)
    # Only adding levels keeps whatever it says true: the image is built, with a warning.
    with pytest.warns(UserWarning, match="more than"):
        build_pyramid(zarrurl=dataset.image, num_levels=3)
    attrs = zarr.open_group(dataset.image, mode="r").attrs["ome"]
    assert len(attrs["multiscales"][0]["datasets"]) == 3
    # Replacing levels it may list would leave it wrong: refused before anything is written.
    before = tree_snapshot(plate)
    with pytest.raises(PyramidError, match=r"more than .*Nothing was written"):
        build_pyramid(zarrurl=dataset.image, num_levels=2, overwrite=True)
    assert tree_snapshot(plate) == before


def test_a_broken_own_consolidated_file_refuses_the_build_before_writing(tmp_path):
    dataset = zarr_python_image(tmp_path, 2)
    (dataset.image / ".zmetadata").write_text('{"zarr_consolidated_format": 1}')
    before = tree_snapshot(dataset.image)
    with pytest.raises(PyramidError, match=r"not consolidated metadata.*Nothing was written"):
        build_pyramid(zarrurl=dataset.image, num_levels=3)
    assert tree_snapshot(dataset.image) == before


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param({"up": 3, "file": ".zmetadata"}, id="sibling-entries"),
        pytest.param({"up": 9, "file": ".zmetadata"}, id="too-far-up"),
        pytest.param({"up": 0, "file": "zarr.json"}, id="own-zarr-json"),
        pytest.param({"up": 3, "file": "../../outside.json"}, id="file-outside"),
    ],
)
def test_a_forged_journal_cannot_edit_other_entries_or_files(tmp_path, edit):
    from napari_pyramids.storage.transaction import ImageLock, recover

    dataset = ome_zarr_plate(tmp_path, 2)
    plate = dataset.top
    folder = dataset.image / ".napari-pyramids-build-0123456789ab"
    (folder / "aside").mkdir(parents=True)
    forged = {"A/2/0/.zattrs": {"forged": True}}
    journal = {
        "tool": "napari-pyramids",
        "build": "0123456789ab",
        "phase": "publishing",
        "metadata_file": ".zattrs",
        "original": (dataset.image / ".zattrs").read_text(),
        "intermediate_sha256": None,
        "final_sha256": None,
        "placed": [],
        "moved_aside": [],
        "created_dirs": [],
        "created_files": [],
        "consolidated": [
            {**edit, "between": None, "after": forged, "before": {"A/2/0/.zattrs": None}}
        ],
    }
    (folder / "journal.json").write_text(json.dumps(journal))
    before = tree_snapshot(plate)
    with (
        pytest.warns(UserWarning, match="no napari-pyramids build wrote it"),
        ImageLock(dataset.image, "test"),
    ):
        recover(dataset.image)
    assert tree_snapshot(plate) == before


# --------------------------------------------------------------------------- disk full


@pytest.mark.parametrize(
    ("writer", "zarr_format"),
    [
        pytest.param("ngff-zarr", 2, id="ngff-zarr-v2"),
        pytest.param("ome-zarr-plate", 3, id="plate-v3"),
    ],
)
def test_no_space_at_every_store_step_leaves_consolidated_metadata_true(
    tmp_path, writer, zarr_format, capsys
):
    import errno

    from faultkit import Steps
    from napari_pyramids.storage import transaction

    dataset = WRITERS[writer](tmp_path / "pristine", zarr_format)
    build_pyramid(zarrurl=dataset.image, num_levels=4, method="nearest")
    old = dataset.pyramid(4, "nearest")
    new = dataset.pyramid(3)
    params = {"num_levels": 3, "overwrite": True}
    base = dataset.top.parent
    before = tree_snapshot(dataset.top)

    def copy(name: str) -> Dataset:
        target = tmp_path / name / base.name
        shutil.copytree(base, target, symlinks=True)
        return Dataset(
            target / dataset.image.relative_to(base),
            tuple(target / g.relative_to(base) for g in dataset.consolidated),
        )

    counter = Steps()
    with counter.installed(transaction):
        build_pyramid(zarrurl=copy("count").image, **params)
    error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    outcomes: dict[str, int] = {}
    for step in range(1, counter.count + 1):
        trial = copy(f"step{step}")
        with (
            Steps(fail_at=step, error=error).installed(transaction),
            warnings.catch_warnings(record=True) as caught,
        ):
            warnings.simplefilter("always")
            try:
                build_pyramid(zarrurl=trial.image, **params)
            except PyramidError:
                outcome = "refused"
            else:
                stale = any("could not be updated" in str(w.message) for w in caught)
                outcome = "built, a group's left listing level 0" if stale else "built"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        listed = check_consistent(trial, zarr_format, old, new, tmp_path)
        if outcome == "refused":
            assert tree_snapshot(trial.top) == before, f"step {step}"
        else:
            assert len(level_paths(trial.image)) == 3
            assert listed in (1, 3)
        shutil.rmtree(trial.top.parent.parent)
    report(capsys, f"no space at every store step ({writer} v{zarr_format}): {outcomes}")
    assert outcomes.get("refused")
    assert outcomes.get("built")


# --------------------------------------------------------------------------- kill -9

KILL_CASES = [
    pytest.param("ngff-zarr", 2, True, id="ngff-zarr-v2-overwrite"),
    pytest.param("ngff-zarr", 3, False, id="ngff-zarr-v3"),
    pytest.param("ome-zarr-plate", 2, False, id="plate-v2"),
    pytest.param("ome-zarr-plate", 3, True, id="plate-v3-overwrite"),
]


@pytest.mark.parametrize(("writer", "zarr_format", "overwrite"), KILL_CASES)
def test_kill_at_every_store_step_leaves_consolidated_metadata_true(
    tmp_path, rng, writer, zarr_format, overwrite, capsys
):
    pristine = WRITERS[writer](tmp_path / "pristine", zarr_format)
    old = [DATA]
    if overwrite:
        build_pyramid(zarrurl=pristine.image, num_levels=4, method="nearest")
        old = vector_pyramid(DATA, FACTORS, 4, "nearest")
    new = vector_pyramid(DATA, FACTORS, 3, "mean")
    params = {"num_levels": 3, "overwrite": overwrite}
    top = pristine.top
    base = top.parent

    def copy(name: str) -> Dataset:
        target = tmp_path / name / base.name
        shutil.copytree(base, target, symlinks=True)
        moved = target / top.relative_to(base)
        return Dataset(
            moved / pristine.image.relative_to(top),
            tuple(target / g.relative_to(base) for g in pristine.consolidated),
        )

    reference = copy("reference")
    build_pyramid(zarrurl=reference.image, **params)
    after = tree_snapshot(reference.top)
    counting = copy("count")
    child = start_build(counting.image, params, kill_at=10**9)
    kind, _, total = child.finish()
    assert kind == "end"
    assert tree_snapshot(counting.top) == after

    seen: dict[int, int] = {}
    schedule = StepSchedule(total)
    for step in schedule:
        dataset = copy(f"kill{step}")
        child = start_build(dataset.image, params, kill_at=step)
        child.process.join(60)
        assert child.process.exitcode == -9, f"step {step} of {total} was not reached"
        listed = check_consistent(dataset, zarr_format, old, new, tmp_path)
        seen[listed] = seen.get(listed, 0) + 1
        if listed == len(new):
            schedule.committed(step)
        if step % 2:
            # Kill the next build too, anywhere (its recovery included), then finish.
            again = start_build(dataset.image, params, kill_at=int(rng.integers(1, total + 1)))
            again.process.join(60)
            check_consistent(dataset, zarr_format, old, new, tmp_path)
        finish_again(dataset, params)
        assert tree_snapshot(dataset.top) == after, f"step {step}"
        for group in dataset.consolidated:
            assert entries(group) == reconsolidated(group, tmp_path)
        shutil.rmtree(dataset.top.parent.parent)
    report(
        capsys,
        f"kill -9 with consolidated metadata ({writer} v{zarr_format} overwrite={overwrite}): "
        f"{total} store steps, {sum(seen.values())} killed; consolidated readers saw "
        f"{seen} levels",
    )
    assert 3 in seen
    assert 1 in seen or not overwrite


def finish_again(dataset: Dataset, params: dict[str, Any]) -> None:
    """The same call again: it completes the build, or says it is already complete."""
    try:
        build_pyramid(zarrurl=dataset.image, **params)
    except PyramidError as exc:
        message = str(exc)
    else:
        return
    assert "already exists" in message


def check_consistent(
    dataset: Dataset,
    zarr_format: int,
    old: list[np.ndarray],
    new: list[np.ndarray],
    scratch: Path,
) -> int:
    """Whatever a kill left, consolidated readers see whole levels (old, new or level 0
    alone) with true metadata; returns how many levels they see."""
    found = entries(dataset.consolidated[0])
    paths = listed_levels(dataset, dataset.consolidated[0], found)
    levels = new if len(paths) == len(new) and len(paths) != len(old) else old
    if len(paths) == 1:
        levels = old[:1]
    check_readers_see(dataset, zarr_format, levels, scratch)
    return len(paths)
