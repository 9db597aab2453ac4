"""Update against a full build: finding that nothing changed, and refreshing after an edit.

For each repeat, on a fresh copy of a level-0-only benchmark image (``workload.py``), each
step a fresh process of the CLI:

1. ``napari-pyramids build COPY --levels 4``: the full build;
2. ``napari-pyramids update COPY``: nothing changed;
3. a 300 x 300 patch of one plane of level 0 rewritten with zarr-python (not timed), then
   ``napari-pyramids update COPY``, checked against numpy over the edit;
4. ``python -c "import napari_pyramids.cli, napari_pyramids.update"``: start-up alone.

Prints medians and the ratios update / build, in total and beyond start-up.

    python benchmarks/update.py --size 1GiB --repeats 5
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import workload as wl  # noqa: E402

CLI = [sys.executable, "-m", "napari_pyramids.cli"]


def edit_region(n: int) -> tuple:
    """A 300 x 300 patch, not aligned to chunks, inside an n x n plane."""
    x = n // 2 + 76
    return (0, 0, slice(1000, 1300), slice(x, x + 300))


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def check_level1(root: Path, edit: tuple) -> None:
    """Level 1 over the edit equals numpy's mean of level 0, rounded half to even."""
    import zarr

    c, z, ys, xs = edit
    y0, y1, x0, x1 = ys.start // 2, ys.stop // 2, xs.start // 2, xs.stop // 2
    source = zarr.open_array(root / "0", mode="r")[c, z, 2 * y0 : 2 * y1, 2 * x0 : 2 * x1]
    windows = source.reshape(y1 - y0, 2, x1 - x0, 2).astype(np.float64).mean(axis=(1, 3))
    got = zarr.open_array(root / "1", mode="r")[c, z, y0:y1, x0:x1]
    np.testing.assert_array_equal(got, np.rint(windows).astype(np.uint16))


def one_run(image: Path, scratch: Path, rng: np.random.Generator) -> dict[str, float]:
    import zarr

    copy = scratch / "copy.ome.zarr"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(image, copy)  # keeps modification times, as cp -a does
    times = {"build": timed([*CLI, "build", str(copy), "--levels", "4", "--quiet"])}
    times["unchanged"] = timed([*CLI, "update", str(copy), "--quiet"])
    level0 = zarr.open_array(copy / "0", mode="r+")
    edit = edit_region(level0.shape[-1])
    level0[edit] = rng.integers(0, 4000, size=(300, 300), dtype=np.uint16)
    times["edit"] = timed([*CLI, "update", str(copy), "--quiet"])
    check_level1(copy, edit)
    times["startup"] = timed(
        [sys.executable, "-c", "import napari_pyramids.cli, napari_pyramids.update"]
    )
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(wl.SIZES), default="1GiB")
    parser.add_argument("--format", choices=wl.FORMATS, default="v2-blosc-lz4")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data", type=Path, default=HERE / "data")
    args = parser.parse_args()
    work = wl.Workload(args.size, args.format)
    image = wl.generate([work], args.data)[work.name]
    rng = np.random.default_rng(0)
    load_before = os.getloadavg()
    runs = []
    with tempfile.TemporaryDirectory(dir=args.data) as scratch:
        for repeat in range(args.repeats):
            runs.append(one_run(image, Path(scratch), rng))
            print(f"run {repeat + 1}: " + ", ".join(f"{k} {v:.3f} s" for k, v in runs[-1].items()))
    load_after = os.getloadavg()
    median = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    start = median["startup"]
    print(f"\n{work.name}, medians of {args.repeats} fresh processes:")
    for key, value in median.items():
        low, high = min(r[key] for r in runs), max(r[key] for r in runs)
        print(f"  {key:9s} {value:.3f} s ({low:.3f}-{high:.3f})")
    for key in ("unchanged", "edit"):
        total = median[key] / median["build"]
        beyond = (median[key] - start) / (median["build"] - start)
        print(f"  {key} / build: {total:.3f} in total, {beyond:.3f} beyond start-up")
    print(f"  load average (1, 5, 15 min) before {load_before}, after {load_after}")


if __name__ == "__main__":
    main()
