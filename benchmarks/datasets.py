"""Whole-plate benchmark: a plate of many small images against one image of the same voxels.

    python benchmarks/datasets.py                      # 96 wells x 4 fields, v2, 1 repeat
    python benchmarks/datasets.py --repeats 3 --format v3-zstd

The plate holds ``wells x fields`` images of 2 x 1024 x 1024 uint16 (CYX, chunks 1 x 1024 x
1024); the single image holds the same fields tiled into one 2 x (16*1024) x (24*1024) array
with the same chunks, so both builds read, reduce and write the same chunks with the same
codec. Both are built by the command line (``napari-pyramids build PATH --levels 3``) in a
fresh process on a fresh copy of level 0 (flushed to disk before the clock starts), plate and
image interleaved. The ratio plate / image is the per-image overhead of a dataset build
(planning, locking, flushing and publishing each image); the target is <= 2.

Every built level of a sample of fields (and of the single image) is compared with numpy.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import workload as wl  # noqa: E402

TIME = "/usr/bin/time"
FIELD = (2, 1024, 1024)
# Distinct fields generated (the plate cycles through them; the codec sees real-looking data).
# 16, laid out in the single image by ``tile_field`` so that no chunk of levels 1 and 2 (2 x 2
# and 4 x 4 fields) holds the same field twice: with 8 fields in a row of 24 the field under
# each one was the same, and zstd found every level-1 chunk's lower half in its upper half,
# encoding the single image's levels 3x faster per byte than the plate's.
DISTINCT = 16
LEVELS = 3
TRASH = ".trash"


def field_planes(count: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` distinct 2 x 1024 x 1024 uint16 fields: nuclei and membranes with shot noise,
    drawn as the main benchmark's images are (workload.py)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    coarse = (1, FIELD[1] // 8, FIELD[2] // 8)
    fields = []
    for _ in range(count):
        channels = []
        for c in range(FIELD[0]):
            volume = wl._smooth_volume(rng, c, coarse)[0]
            expected = ndimage.zoom(volume, 8, order=1, grid_mode=True, mode="nearest")
            channels.append(rng.poisson(expected).astype(np.uint16))
        fields.append(np.stack(channels))
    return fields


def _array_kwargs(fmt: str) -> dict:
    import zarr

    if fmt == "v2-blosc-lz4":
        from numcodecs import Blosc

        return {
            "chunk_key_encoding": {"name": "v2", "separator": "/"},
            "compressors": Blosc(cname="lz4", clevel=5, shuffle=Blosc.SHUFFLE),
        }
    return {"dimension_names": ["c", "y", "x"], "compressors": zarr.codecs.ZstdCodec(level=3)}


def _image_attrs(name: str, zarr_format: int) -> dict:
    multiscale = {
        "name": name,
        "axes": [
            {"name": "c", "type": "channel"},
            {"name": "y", "type": "space", "unit": "micrometer"},
            {"name": "x", "type": "space", "unit": "micrometer"},
        ],
        "datasets": [
            {
                "path": "0",
                "coordinateTransformations": [{"type": "scale", "scale": [1, 0.325, 0.325]}],
            }
        ],
    }
    if zarr_format == 2:
        return {"multiscales": [{"version": "0.4", **multiscale}]}
    return {"ome": {"version": "0.5", "multiscales": [multiscale]}}


def _ngff(attrs: dict, zarr_format: int) -> dict:
    return attrs if zarr_format == 2 else {"ome": {"version": "0.5", **attrs}}


def write_plate(path: Path, fmt: str, wells: int, fields: int, data: list[np.ndarray]) -> None:
    import zarr

    zarr_format = 2 if fmt.startswith("v2") else 3
    rows = [chr(ord("A") + r) for r in range(8)]
    columns = [str(c + 1) for c in range(-(-wells // 8))]
    well_paths = [f"{rows[w % 8]}/{columns[w // 8]}" for w in range(wells)]
    plate = zarr.open_group(path, mode="w-", zarr_format=zarr_format)
    plate_doc = {
        "rows": [{"name": r} for r in rows],
        "columns": [{"name": c} for c in columns],
        "wells": [
            {"path": p, "rowIndex": rows.index(p[0]), "columnIndex": columns.index(p[2:])}
            for p in well_paths
        ],
        "field_count": fields,
    }
    if zarr_format == 2:
        plate_doc["version"] = "0.4"
    plate.attrs.update(_ngff({"plate": plate_doc}, zarr_format))
    k = 0
    for well_path in well_paths:
        well = plate.require_group(well_path)
        images = {"images": [{"path": str(f)} for f in range(fields)]}
        if zarr_format == 2:
            images["version"] = "0.4"
        well.attrs.update(_ngff({"well": images}, zarr_format))
        for f in range(fields):
            image = well.create_group(str(f))
            array = image.create_array(
                "0", shape=FIELD, chunks=(1, 1024, 1024), dtype="uint16", fill_value=0,
                **_array_kwargs(fmt),
            )  # fmt: skip
            array[...] = data[k % len(data)]
            image.attrs.update(_image_attrs(f"{well_path}/{f}", zarr_format))
            k += 1


def tiling(count: int) -> tuple[int, int]:
    """Rows x columns of fields in the single image: as square as ``count`` allows."""
    rows = int(np.sqrt(count))
    while count % rows:
        rows -= 1
    return rows, count // rows


def tile_field(row: int, column: int) -> int:
    """Which distinct field the single image holds at tile (row, column): each one as often as
    in the plate, and never twice in an aligned 4 x 4 square of tiles."""
    return (column + 4 * row) % DISTINCT


def write_single(path: Path, fmt: str, count: int, data: list[np.ndarray]) -> None:
    import zarr

    zarr_format = 2 if fmt.startswith("v2") else 3
    rows, columns = tiling(count)
    group = zarr.open_group(path, mode="w-", zarr_format=zarr_format)
    shape = (2, rows * 1024, columns * 1024)
    array = group.create_array(
        "0", shape=shape, chunks=(1, 1024, 1024), dtype="uint16", fill_value=0,
        **_array_kwargs(fmt),
    )  # fmt: skip
    for k in range(count):
        r, c = divmod(k, columns)
        array[:, r * 1024 : (r + 1) * 1024, c * 1024 : (c + 1) * 1024] = data[tile_field(r, c)]
    group.attrs.update(_image_attrs("single", zarr_format))


def level0_copy(source: Path, target: Path) -> None:
    """A copy without the built levels: metadata as written, arrays '0' only; flushed.

    The previous copy is moved into the trash (removed after the last run), not deleted: ext4
    passes over inodes freed in the last 30 seconds when it allocates new ones (``recently_
    deleted`` in fs/ext4/ialloc.c), so deleting a plate's 20,000 files just before a timed
    build would tax its file creations with the benchmark's own clean-up, which a user's
    build never pays (measured: about 0.3 s of system time on the plate).
    """
    if target.exists():
        trash = target.parent / TRASH
        trash.mkdir(exist_ok=True)
        target.rename(trash / f"{target.name}-{time.monotonic_ns()}")

    def is_array(path: Path) -> bool:
        if (path / ".zarray").exists():
            return True
        meta = path / "zarr.json"
        return meta.exists() and json.loads(meta.read_text()).get("node_type") == "array"

    def ignore(folder: str, names: list[str]) -> list[str]:
        ignored = [n for n in names if n.startswith(".napari-pyramids")]
        if is_array(Path(folder) / "0"):
            ignored += [n for n in names if n.isdigit() and n != "0"]
        return ignored

    shutil.copytree(source, target, ignore=ignore)
    os.sync()


def timed(argv: list[str]) -> tuple[float, float, int]:
    """Wall seconds, peak RSS MiB and exit status of a command."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), env.get("PYTHONPATH")) if p)
    report = Path(os.environ.get("TMPDIR", "/tmp")) / f"rusage-{os.getpid()}"
    launcher = [TIME, "-f", "%M", "-o", str(report)] if os.path.exists(TIME) else []
    start = time.perf_counter()
    code = subprocess.call([*launcher, *argv], env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    rss = float(report.read_text().split()[-1]) / 1024 if launcher else float("nan")
    return wall, rss, code


def build_argv(path: Path, extra: list[str]) -> list[str]:
    return [
        sys.executable, "-m", "napari_pyramids.cli", "build", str(path), "--levels", str(LEVELS),
        "--quiet", *extra,
    ]  # fmt: skip


def reference_levels(field: np.ndarray) -> list[np.ndarray]:
    """Levels 0..LEVELS-1 of one field: 2x2 integer mean rounded half to even."""
    levels = [field]
    for _ in range(1, LEVELS):
        prev = levels[-1].astype(np.int64)
        c, ny, nx = prev.shape
        total = prev[:, : ny // 2 * 2, : nx // 2 * 2].reshape(c, ny // 2, 2, nx // 2, 2)
        total = total.sum(axis=(2, 4))
        q, r = np.divmod(total, 4)
        q += (2 * r > 4) | ((2 * r == 4) & (q % 2 == 1))
        levels.append(q.astype(np.uint16))
    return levels


def verify(plate: Path, single: Path, data: list[np.ndarray], wells: int, fields: int) -> str:
    """Compare built levels of a sample of fields, and of the single image's tiles, to numpy."""
    import zarr

    references = [reference_levels(d) for d in data]
    group = zarr.open_group(plate, mode="r", use_consolidated=False)
    wells_meta = group.attrs.asdict()
    wells_meta = wells_meta.get("ome", wells_meta)["plate"]["wells"]
    checked = 0
    for k in range(0, wells * fields, max(1, wells * fields // 16)):
        well, f = wells_meta[k // fields]["path"], k % fields
        for level in range(1, LEVELS):
            got = zarr.open_array(plate / well / str(f) / str(level), mode="r")[...]
            if not np.array_equal(got, references[k % len(data)][level]):
                return f"MISMATCH at {well}/{f} level {level}"
        checked += 1
    _rows, columns = tiling(wells * fields)
    for level in range(1, LEVELS):
        got = zarr.open_array(single / str(level), mode="r")
        n = 1024 >> level
        for k in (0, columns + 1, wells * fields - 1):
            r, c = divmod(k, columns)
            tile = got[:, r * n : (r + 1) * n, c * n : (c + 1) * n]
            if not np.array_equal(tile, references[tile_field(r, c)][level]):
                return f"MISMATCH in the single image, tile {k} level {level}"
    return f"identical to numpy ({checked} fields and 3 tiles of the single image, every level)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--format", choices=("v2-blosc-lz4", "v3-zstd"), default="v2-blosc-lz4")
    parser.add_argument("--wells", type=int, default=96)
    parser.add_argument("--fields", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--work", type=Path, default=HERE / ".work" / "datasets")
    parser.add_argument("--output", type=Path, default=None, help="write the figures as JSON")
    parser.add_argument("extra", nargs="*", help="more build options, after --")
    args = parser.parse_args(argv)

    count = args.wells * args.fields
    name = f"{args.wells}x{args.fields}-{args.format}-{DISTINCT}"
    source_plate = args.work / f"plate-{name}.ome.zarr"
    source_single = args.work / f"single-{name}.ome.zarr"
    data = field_planes(DISTINCT)
    if not (args.work / f"{name}.complete").exists():
        print(f"generating the plate and the single image ({count} fields, not timed)", flush=True)
        args.work.mkdir(parents=True, exist_ok=True)
        for path in (source_plate, source_single):
            shutil.rmtree(path, ignore_errors=True)
        write_plate(source_plate, args.format, args.wells, args.fields, data)
        write_single(source_single, args.format, count, data)
        (args.work / f"{name}.complete").write_text("")
    if (args.work / TRASH).exists():
        # A killed run's trash: removed, then 30 s for ext4 to reuse its inodes freely.
        shutil.rmtree(args.work / TRASH)
        time.sleep(30)
    runs: dict[str, list[tuple[float, float]]] = {"plate": [], "single": []}
    targets = {
        "plate": args.work / "run-plate.ome.zarr",
        "single": args.work / "run-single.ome.zarr",
    }
    for repeat in range(args.repeats):
        for kind, source in (("plate", source_plate), ("single", source_single)):
            level0_copy(source, targets[kind])
            wall, rss, code = timed(build_argv(targets[kind], args.extra))
            if code != 0:
                print(f"{kind}: exit status {code}", file=sys.stderr)
                return 1
            runs[kind].append((wall, rss))
            print(f"repeat {repeat + 1}: {kind} {wall:.2f} s, peak RSS {rss:.0f} MiB", flush=True)
    shutil.rmtree(args.work / TRASH, ignore_errors=True)
    check = verify(targets["plate"], targets["single"], data, args.wells, args.fields)
    plate_s = statistics.median(w for w, _ in runs["plate"])
    single_s = statistics.median(w for w, _ in runs["single"])
    rows, columns = tiling(count)
    figures = {
        "format": args.format,
        "plate": f"{args.wells} wells x {args.fields} fields of {FIELD}",
        "single": f"(2, {rows * 1024}, {columns * 1024})",
        "levels": LEVELS,
        "repeats": args.repeats,
        "plate_s": [round(w, 3) for w, _ in runs["plate"]],
        "single_s": [round(w, 3) for w, _ in runs["single"]],
        "plate_peak_rss_mib": max(r for _, r in runs["plate"]),
        "single_peak_rss_mib": max(r for _, r in runs["single"]),
        "ratio": round(plate_s / single_s, 2),
        "values": check,
    }
    print(json.dumps(figures, indent=2))
    if args.output:
        args.output.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if not check.startswith("MISMATCH") else 1


if __name__ == "__main__":
    sys.exit(main())
