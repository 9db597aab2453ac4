"""update_pyramid: after any edit of level 0 (found from the record, or named as regions),
the levels are byte for byte those a full rebuild writes, and nothing else is rewritten.

The reference is a fresh image holding the edited level 0, built from scratch with the same
options; level 0 is edited with zarr-python, as another program would.
Examples per property: ``NAPARI_PYRAMIDS_EXAMPLES`` (default 30).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from faultkit import validate_ome
from imaging import (
    CHANGE_RECORD,
    DEFAULT_AXES,
    age_files,
    file_hashes,
    level_paths,
    reference_pyramid,
    write_image,
)
from napari_pyramids import PyramidError, build_pyramid, update_pyramid
from napari_pyramids.changes import unchanged_since_record
from napari_pyramids.cli import main
from napari_pyramids.pyramid.methods import BUILT_IN
from napari_pyramids.pyramid.names import METHOD_NAMES
from napari_pyramids.storage import LocalStore

EXAMPLES = int(os.environ.get("NAPARI_PYRAMIDS_EXAMPLES", 30))
METHODS = ["mean", "median", "min", "max", "mode", "nearest"]
DTYPES = ["uint8", "uint16", "int32", "float32"]
MAX_VOXELS = 4000
RECORD = "1/.napari-pyramids-record.json"  # inside level 1 of the images built()


def levels_state(root: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime_ns) of every file of levels 1..n but the change record (rewritten by
    design after an update): any rewrite changes one of them."""
    state = {}
    for path in level_paths(root)[1:]:
        for folder, _, files in os.walk(root / path):
            for name in set(files) - {CHANGE_RECORD}:
                info = os.stat(os.path.join(folder, name))
                state[os.path.join(folder, name)] = (info.st_ino, info.st_mtime_ns)
    return state


def same_as_full_rebuild(root: Path, data: np.ndarray, case: dict, tmp: Path) -> None:
    fresh = write_image(
        tmp / "fresh.zarr",
        data,
        zarr_format=case["zarr_format"],
        chunks=case["chunks"],
        shards=case["shards"],
        axes=case["axes"],
    )
    build_pyramid(zarrurl=fresh, **case["options"])
    paths = level_paths(root)
    assert paths == level_paths(fresh)
    for path in paths:
        assert file_hashes(root / path) == file_hashes(fresh / path), f"level {path!r}"


@st.composite
def cases(draw):
    ndim = draw(st.integers(2, 4))
    axes = DEFAULT_AXES[ndim]
    fxy = draw(st.integers(2, 3))
    fz = draw(st.integers(1, 2)) if "z" in axes else 1
    factors = tuple(fxy if a in "yx" else fz if a == "z" else 1 for a in axes)
    sizes = {"c": (1, 2), "z": (fz, 6), "y": (fxy * 2, 40), "x": (fxy * 2, 40)}
    shape = [draw(st.integers(*sizes[a])) for a in axes]
    while math.prod(shape) > MAX_VOXELS:
        biggest = int(np.argmax(shape))
        shape[biggest] = max(factors[biggest] * 2, shape[biggest] // 2)
    edge = draw(st.sampled_from(["trim", "keep"]))
    zarr_format = draw(st.sampled_from([2, 3]))
    chunks = tuple(draw(st.integers(1, max(1, -(-n // 3)))) for n in shape)
    shards = None
    if zarr_format == 3 and draw(st.booleans()):
        shards = tuple(c * draw(st.integers(1, 3)) for c in chunks)
    chunksize = None
    if draw(st.booleans()):
        chunksize = tuple(draw(st.integers(1, 12)) for _ in shape)
    levels = 1
    current = list(shape)
    while levels < 4 and all(n >= f for n, f in zip(current, factors, strict=True)):
        pairs = zip(current, factors, strict=True)
        current = [n // f if edge == "trim" else -(-n // f) for n, f in pairs]
        levels += 1
    edits = []
    for _ in range(draw(st.integers(0, 3))):
        box = []
        for n in shape:
            start = draw(st.integers(0, n - 1))
            box.append(slice(start, draw(st.integers(start + 1, n))))
        edits.append((tuple(box), draw(st.integers(0, 2**31))))
    grow = draw(st.integers(0, 3)) if axes[0] in "cz" else 0
    return {
        "axes": axes,
        "shape": tuple(shape),
        "dtype": draw(st.sampled_from(DTYPES)),
        "zarr_format": zarr_format,
        "chunks": chunks,
        "shards": shards,
        "edits": edits,
        "grow": grow,
        "regions": draw(st.booleans()),
        "aged": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**32 - 1)),
        "options": {
            "num_levels": draw(st.integers(2, max(2, levels))),
            "coarsening_xy": fxy,
            "coarsening_z": fz,
            "method": draw(st.sampled_from(METHODS)),
            "edge": edge,
            "chunksize": chunksize,
            "labels": False,
        },
    }


def values(rng, shape, dtype) -> np.ndarray:
    if np.dtype(dtype).kind == "f":
        return (rng.standard_normal(shape) * 100).astype(dtype)
    # Few distinct values half the time (mode, ties and empty chunks), else wide ones.
    top = 4 if rng.random() < 0.5 else 200
    return rng.integers(0, top, size=shape).astype(dtype)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=cases())
def test_update_equals_a_full_rebuild(case):
    rng = np.random.default_rng(case["seed"])
    data = values(rng, case["shape"], case["dtype"])
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        root = write_image(
            tmp / "img.zarr",
            data,
            zarr_format=case["zarr_format"],
            chunks=case["chunks"],
            shards=case["shards"],
            axes=case["axes"],
        )
        if case["aged"]:
            age_files(root)
        try:
            build_pyramid(zarrurl=root, **case["options"])
        except PyramidError as exc:
            refusal = str(exc)
        else:
            refusal = None
        if refusal is not None:
            assert "smaller than one pixel" in refusal
            event("refused: too many levels")
            return
        level0 = zarr.open_array(root / "0", mode="r+")
        if case["grow"]:
            shape = (case["shape"][0] + case["grow"], *case["shape"][1:])
            level0.resize(shape)
            level0[case["shape"][0] :] = values(rng, (case["grow"], *shape[1:]), case["dtype"])
        for box, seed in case["edits"]:
            patch = values(np.random.default_rng(seed), level0[box].shape, case["dtype"])
            level0[box] = patch
        edited = level0[...]
        before = levels_state(root)
        regions = [box for box, _ in case["edits"]] if case["regions"] else None
        report = update_pyramid(zarrurl=root, regions=regions)
        event(f"{report.status}, grown={report.grown} {report.note[:60]}")
        same_as_full_rebuild(root, edited, case, tmp)
        np.testing.assert_array_equal(zarr.open_array(root / "0", mode="r")[...], edited)
        if report.status == "unchanged":
            assert levels_state(root) == before
        # The record now matches level 0: a second update finds nothing to do.
        assert update_pyramid(zarrurl=root).status == "unchanged"
        validate_ome(root)


def built(tmp_path: Path, shape=(2, 96, 80), zarr_format=2, **options) -> Path:
    data = np.random.default_rng(1).integers(0, 1000, size=shape, dtype=np.uint16)
    root = write_image(tmp_path / "img.zarr", data, zarr_format=zarr_format, chunks=(1, 16, 16))
    age_files(root)
    build_pyramid(zarrurl=root, num_levels=3, **options)
    return root


def test_unchanged_image_rewrites_nothing_and_exits_0(tmp_path, capsys):
    root = built(tmp_path)
    before = levels_state(root)
    record = (root / RECORD).read_bytes()
    assert main(["update", str(root)]) == 0
    assert "unchanged; nothing rewritten" in capsys.readouterr().out
    assert levels_state(root) == before
    assert (root / RECORD).read_bytes() == record


def test_edit_rewrites_only_the_units_above_it(tmp_path):
    root = built(tmp_path)
    before = levels_state(root)
    zarr.open_array(root / "0", mode="r+")[1, 40:45, 20:23] = 7
    report = update_pyramid(zarrurl=root)
    # One level-0 chunk: the level-1 chunk over it (its window) and the level-2 chunk.
    assert report.changed == 1
    assert report.written == {1: 1, 2: 1}
    changed = {p for p, s in levels_state(root).items() if before.get(p) != s}
    assert {Path(p).relative_to(root).as_posix() for p in changed} == {"1/1/1/0", "2/1/0/0"}
    expected = reference_pyramid(zarr.open_array(root / "0")[...], (1, 2, 2), 3, "mean")
    for k in (1, 2):
        np.testing.assert_array_equal(zarr.open_array(root / str(k))[...], expected[k])


def test_regions_from_a_caller_rewrite_those_units_only(tmp_path):
    root = built(tmp_path, zarr_format=3)
    level0 = zarr.open_array(root / "0", mode="r+")
    level0[0, 0:3, 70:80] = 999
    level0[1, 90:96, 0:5] = 5  # not named: left for a later update to find
    report = update_pyramid(zarrurl=root, regions=[(slice(0, 1), slice(0, 3), slice(70, 80))])
    assert report.written == {1: 1, 2: 1}
    expected = reference_pyramid(level0[...], (1, 2, 2), 3, "mean")
    np.testing.assert_array_equal(zarr.open_array(root / "1")[0], expected[1][0])
    assert update_pyramid(zarrurl=root).changed == 1
    for k in (1, 2):
        np.testing.assert_array_equal(zarr.open_array(root / str(k))[...], expected[k])


def test_appended_time_points_extend_every_level(tmp_path):
    root = built(tmp_path, zarr_format=3)
    level0 = zarr.open_array(root / "0", mode="r+")
    level0.resize((3, 96, 80))
    level0[2] = 321
    report = update_pyramid(zarrurl=root)
    assert report.status == "updated"
    assert report.grown
    expected = reference_pyramid(level0[...], (1, 2, 2), 3, "mean")
    for k in (1, 2):
        got = zarr.open_array(root / str(k))
        assert got.shape == expected[k].shape
        np.testing.assert_array_equal(got[...], expected[k])
    validate_ome(root)


def test_image_without_record_is_rebuilt_in_full_and_says_so(tmp_path):
    root = built(tmp_path)
    (root / RECORD).unlink()
    zarr.open_array(root / "0", mode="r+")[0, :8, :8] = 0
    report = update_pyramid(zarrurl=root)
    assert report.status == "rebuilt"
    assert "no change record" in report.note
    expected = reference_pyramid(zarr.open_array(root / "0")[...], (1, 2, 2), 3, "mean")
    for k in (1, 2):
        np.testing.assert_array_equal(zarr.open_array(root / str(k))[...], expected[k])
    assert (root / RECORD).exists()
    assert update_pyramid(zarrurl=root).status == "unchanged"


def test_levels_built_by_another_tool_are_refused_naming_build_overwrite(tmp_path, capsys):
    root = built(tmp_path)
    (root / RECORD).unlink()
    attrs = root / ".zattrs"
    attrs.write_text(attrs.read_text().replace("napari_pyramids.build_pyramid", "other"))
    before = levels_state(root)
    assert main(["update", str(root)]) == 2
    err = capsys.readouterr().err
    assert "not built by napari-pyramids" in err
    assert f"napari-pyramids build {root} --overwrite" in err
    assert levels_state(root) == before


def test_level0_only_image_is_refused(tmp_path, capsys):
    data = np.zeros((32, 32), dtype=np.uint8)
    root = write_image(tmp_path / "img.zarr", data)
    assert main(["update", str(root)]) == 2
    assert "no pyramid to update" in capsys.readouterr().err


def test_update_never_writes_level0(tmp_path):
    root = built(tmp_path)
    writer = LocalStore(root).unit_writer("0123456789ab", "0")
    with pytest.raises(PyramidError, match="level 0 is never written"):
        writer.set("0/0/0/0", b"x")
    with pytest.raises(PyramidError, match="level 0 is never written"):
        writer.delete("0/.zarray")
    writer.set("1/0/0/0", (root / "1/0/0/0").read_bytes())  # a level above: allowed
    LocalStore(root).finish_units("0123456789ab")
    assert not any(n.startswith(".napari-pyramids-update") for n in os.listdir(root))


def test_cli_updates_every_image_of_a_folder(tmp_path, capsys):
    roots = []
    for name in ("a", "b"):
        folder = tmp_path / "set" / name
        folder.mkdir(parents=True)
        roots.append(built(folder))
    zarr.open_array(roots[1] / "0", mode="r+")[0, :4, :4] = 1
    assert main(["update", str(tmp_path / "set"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "a/img.zarr: level 0 unchanged" in out.replace(str(tmp_path / "set") + "/", "")
    assert "1 level-0 write unit(s) changed" in out
    expected = reference_pyramid(zarr.open_array(roots[1] / "0")[...], (1, 2, 2), 3, "mean")
    np.testing.assert_array_equal(zarr.open_array(roots[1] / "2")[...], expected[2])


@pytest.mark.parametrize(
    ("zarr_format", "shards"),
    [pytest.param(2, None, id="v2"), pytest.param(3, None, id="v3"),
     pytest.param(3, (1, 32, 32), id="v3-sharded")],
)  # fmt: skip
def test_zarr_python_lists_a_built_and_updated_image_without_a_warning(
    tmp_path, zarr_format, shards
):
    data = np.random.default_rng(2).integers(0, 1000, size=(2, 96, 80), dtype=np.uint16)
    root = write_image(
        tmp_path / "img.zarr", data, zarr_format=zarr_format, chunks=(1, 16, 16), shards=shards
    )
    build_pyramid(zarrurl=root, num_levels=3)
    zarr.open_array(root / "0", mode="r+")[0, :20, :20] = 5
    assert update_pyramid(zarrurl=root).status == "updated"
    assert (root / RECORD).is_file()
    expected = reference_pyramid(zarr.open_array(root / "0")[...], (1, 2, 2), 3, "mean")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        group = zarr.open_group(root, mode="r")
        assert sorted(group.keys()) == ["0", "1", "2"]
        assert sorted(name for name, _ in group.members()) == ["0", "1", "2"]
        assert "1" in str(group.tree())
        level1 = zarr.open_array(root / "1", mode="r")
        # The record is not counted as a chunk (or shard) of level 1.
        unit = level1.shards or level1.chunks  # zarr counts every chunk of a stored shard
        per_unit = math.prod(u // c for u, c in zip(unit, level1.chunks, strict=True))
        units = math.prod(-(-n // u) for n, u in zip(level1.shape, unit, strict=True))
        assert level1.nchunks_initialized == units * per_unit
        assert "Shape" in level1.info_complete().__repr__()
        np.testing.assert_array_equal(level1[...], expected[1])
        validate_ome(root)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # zarr-python's own note that v3 consolidated metadata is not in the spec is not ours.
        warnings.filterwarnings("ignore", "Consolidated metadata is currently not part")
        assert sorted(zarr.consolidate_metadata(root).keys()) == ["0", "1", "2"]


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_record_is_ignored_by_ome_zarr_readers(tmp_path, zarr_format):
    import ngff_zarr
    import tensorstore as ts
    from napari_ome_zarr import napari_get_reader

    root = built(tmp_path, zarr_format=zarr_format)
    assert (root / RECORD).is_file()
    expected = reference_pyramid(zarr.open_array(root / "0")[...], (1, 2, 2), 3, "mean")
    driver = "zarr3" if zarr_format == 3 else "zarr"
    spec = {"driver": driver, "kvstore": {"driver": "file", "path": str(root / "1")}}
    np.testing.assert_array_equal(ts.open(spec, read=True).result().read().result(), expected[1])
    (layer_data, _, _), *_ = napari_get_reader(str(root))(str(root))
    np.testing.assert_array_equal(np.asarray(layer_data[1]), expected[1])
    multiscales = ngff_zarr.from_ngff_zarr(str(root))
    np.testing.assert_array_equal(np.asarray(multiscales.images[1].data), expected[1])


def test_a_build_with_other_options_replaces_the_record_with_level_1(tmp_path):
    root = built(tmp_path)
    old = json.loads((root / RECORD).read_bytes())
    build_pyramid(zarrurl=root, num_levels=3, method="max", overwrite=True)
    assert json.loads((root / RECORD).read_bytes())["options"]["method"] == "max"
    assert old["options"]["method"] == "mean"
    zarr.open_array(root / "0", mode="r+")[1, 40:50, 0:16] = 999
    assert update_pyramid(zarrurl=root).written == {1: 1, 2: 1}
    expected = reference_pyramid(zarr.open_array(root / "0")[...], (1, 2, 2), 3, "max")
    for k in (1, 2):
        np.testing.assert_array_equal(zarr.open_array(root / str(k))[...], expected[k])
    assert not [n for n in os.listdir(root) if n.startswith(".napari-pyramids")]


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_unchanged_is_decided_read_only_and_any_change_defers_to_the_locked_update(
    tmp_path, zarr_format
):
    root = built(tmp_path, zarr_format=zarr_format)
    store = LocalStore(root)
    assert unchanged_since_record(store)
    lock = root / ".napari-pyramids.lock"
    lock.write_text("{}")  # a build holds the image: decide under the lock instead
    assert not unchanged_since_record(store)
    lock.unlink()
    metadata = root / ("zarr.json" if zarr_format == 3 else "1/.zarray")
    original = metadata.read_bytes()
    metadata.write_bytes(original + b"\n")  # same JSON, other bytes: not provably the same
    assert not unchanged_since_record(store)
    assert update_pyramid(zarrurl=root).status == "unchanged"  # the locked update re-records
    assert unchanged_since_record(store)
    zarr.open_array(root / "0", mode="r+")[0, 0:2, 0:2] = 999
    assert not unchanged_since_record(store)
    assert update_pyramid(zarrurl=root).status == "updated"
    assert update_pyramid(zarrurl=root).status == "unchanged"


def test_a_record_without_metadata_digests_still_works_and_gains_them(tmp_path):
    root = built(tmp_path)
    document = json.loads((root / RECORD).read_bytes())
    del document["documents"]  # as a build of the previous version wrote it
    (root / RECORD).write_text(json.dumps(document))
    assert not unchanged_since_record(LocalStore(root))
    assert update_pyramid(zarrurl=root).status == "unchanged"
    assert unchanged_since_record(LocalStore(root))


def test_cli_finds_an_unchanged_image_without_importing_numpy_or_zarr(tmp_path):
    root = built(tmp_path)
    code = (
        "import sys\n"
        "from napari_pyramids.cli import main\n"
        f"assert main(['update', {str(root)!r}, '--quiet']) == 0\n"
        "heavy = {'numpy', 'zarr', 'dask', 'numcodecs'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout == f"{root}: level 0 unchanged; nothing rewritten\n"
    assert not (root / ".napari-pyramids.lock").exists()


def test_the_cli_offers_every_built_in_method():
    assert tuple(method.name for method in BUILT_IN) == METHOD_NAMES
