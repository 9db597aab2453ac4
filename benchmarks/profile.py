"""Where napari-pyramids spends a build: per-phase costs and parallel efficiency.

    python benchmarks/profile.py                      # the 1 GiB v2 and v3 images
    python benchmarks/profile.py --sizes 256MiB --formats v3-zstd

For each image (made by run.py's workload, under benchmarks/.work/images) it

1. replays the engine's work serially on one thread, measuring each phase's CPU time
   (thread CPU time, so other processes on the machine do not count) over the whole
   image: reading chunk files (I/O from the page cache), decoding them, reducing (every
   level), encoding the output chunks and writing them (into a scratch folder);
2. builds the pyramid for real on a fresh copy with 1 worker and with the default workers,
   reporting wall time, CPU time (user + sys) and peak RSS of each build, and how the
   block tasks' time splits into running, waiting for a CPU (other processes on the
   machine) and blocked (the GIL or I/O).

The serial phase sum is the CPU work of a build; (1) against (2) shows the engine's
overhead, and the task split shows whether the threads could overlap.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

import workload as wl  # noqa: E402
from run import fresh_copy  # noqa: E402

from napari_pyramids.images import open_image  # noqa: E402
from napari_pyramids.pyramid.plan import plan_pyramid  # noqa: E402
from napari_pyramids.pyramid.reduce import coarsen  # noqa: E402
from napari_pyramids.storage.chunkio import open_chunk_array  # noqa: E402


def phase_costs(image: Path, levels: int) -> dict[str, float]:
    """CPU seconds (this thread's, so other processes do not count) of each phase of the first
    pass over level 0, run serially on this thread."""
    plan = plan_pyramid(open_image(image), num_levels=levels)
    stage = plan.stages[0]
    source = open_chunk_array(image / plan.levels[0].path)
    if source is None:
        raise SystemExit(f"{image}: level 0 is not read directly; nothing to profile here")
    codec = source._codec
    scratch = Path(tempfile.mkdtemp(prefix="profile-", dir=image.parent))
    t: collections.Counter[str] = collections.Counter()
    try:
        factors = plan.levels[1].factors
        for index in range(stage.n_blocks):
            region = stage.region(index)
            shape = tuple(
                -(-(r.stop - r.start) // f) for r, f in zip(region, factors, strict=True)
            )
            block = np.empty(shape, dtype=source.dtype)
            for chunk_index in source.chunk_indices(region):
                start = time.thread_time()
                with open(source.chunk_path(chunk_index), "rb") as f:
                    raw = f.read()
                t["read chunk files"] += time.thread_time() - start
                start = time.thread_time()
                chunk = np.empty(source.chunks, dtype=source.dtype)
                codec.decode(raw, out=chunk.view(np.uint8).reshape(-1))
                t["decode"] += time.thread_time() - start
                start = time.thread_time()
                reduced = coarsen(chunk, factors, plan.method)
                offset = [
                    c * n // f for c, n, f in zip(chunk_index, source.chunks, factors, strict=True)
                ]
                origin = [r.start // f for r, f in zip(region, factors, strict=True)]
                block[
                    tuple(
                        slice(o - g, o - g + n)
                        for o, g, n in zip(offset, origin, reduced.shape, strict=True)
                    )
                ] = reduced
                t["reduce"] += time.thread_time() - start
            for k in stage.targets:
                if k > 1:
                    start = time.thread_time()
                    block = coarsen(block, plan.levels[k].factors, plan.method)
                    t["reduce"] += time.thread_time() - start
                _encode_and_write(block, plan.levels[k].chunks, codec, scratch / str(k), t)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return dict(t)


def _encode_and_write(block, chunks, codec, folder: Path, t) -> None:
    folder.mkdir(exist_ok=True)
    grid = [range(0, n, c) for n, c in zip(block.shape, chunks, strict=True)]
    for number, origin in enumerate(np.ndindex(*[len(g) for g in grid])):
        region = tuple(slice(g[i], g[i] + c) for g, i, c in zip(grid, origin, chunks, strict=True))
        start = time.thread_time()
        encoded = codec.encode(np.ascontiguousarray(block[region]))
        t["encode"] += time.thread_time() - start
        start = time.thread_time()
        with open(folder / f"{number}", "wb") as f:
            f.write(encoded)
        t["write chunk files"] += time.thread_time() - start


def timed_build(image: Path, levels: int, workers: int | None) -> dict[str, float]:
    """A real build in a fresh process: wall, CPU, peak RSS, and where its tasks' time went.

    Each block task's wall time splits into running on a CPU, waiting in the kernel's run
    queue for one (other processes), and blocked (the GIL, or I/O): from the task thread's
    /proc schedstat before and after the task.
    """
    env = dict(os.environ, PYTHONPATH=str(HERE.parent / "src"))
    argv = [sys.executable, __file__, "--build", str(image), str(levels), str(workers or 0)]
    time_argv = ["/usr/bin/time", "-f", "%M"] if os.path.exists("/usr/bin/time") else []
    out = subprocess.run([*time_argv, *argv], env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if time_argv:
        result["peak_rss_mib"] = int(out.stderr.split()[-1]) / 1024
    return result


def _build_here(image: str, levels: int, workers: int) -> None:
    """Run one build in this process with per-task scheduling statistics (for timed_build)."""
    import resource
    import threading

    from napari_pyramids import api, engine

    def schedstat() -> tuple[float, float]:
        with open(f"/proc/self/task/{threading.get_native_id()}/schedstat") as f:
            running, waiting, _ = f.read().split()
        return int(running) / 1e9, int(waiting) / 1e9

    totals: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    run_block = engine.run_block

    def measured(task, index):
        wall, (running, waiting) = time.perf_counter(), schedstat()
        done = run_block(task, index)
        wall, (running, waiting) = (
            time.perf_counter() - wall,
            (a - b for a, b in zip(schedstat(), (running, waiting), strict=True)),
        )
        with lock:
            totals["task wall"] += wall
            totals["on a CPU"] += running
            totals["waiting for a CPU"] += waiting
            totals["blocked (GIL, I/O)"] += wall - running - waiting
        return done

    engine.run_block = measured
    start = time.perf_counter()
    api.build_pyramid(zarrurl=image, num_levels=levels, workers=workers or None)
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "wall_s": wall,
                "cpu_s": usage.ru_utime + usage.ru_stime,
                "user_s": usage.ru_utime,
                "sys_s": usage.ru_stime,
                "tasks": dict(totals),
            }
        )
    )


def main() -> int:
    if sys.argv[1:2] == ["--build"]:
        _build_here(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", choices=list(wl.SIZES), default=["1GiB"])
    # The phase replay reads chunk files directly, which the sharded format is not (yet).
    unsharded = [f for f in wl.FORMATS if "sharded" not in f]
    parser.add_argument("--formats", nargs="+", choices=wl.FORMATS, default=unsharded)
    parser.add_argument("--levels", type=int, default=5)
    parser.add_argument("--work-dir", type=Path, default=HERE / ".work")
    args = parser.parse_args()
    workloads = [wl.Workload(s, f) for s in args.sizes for f in args.formats]
    images = wl.generate(workloads, args.work_dir / "images", log=print)
    report = {}
    for w in workloads:
        target = args.work_dir / "profile" / f"{w.name}.ome.zarr"
        fresh_copy(images[w.name], target)
        phases = phase_costs(target, args.levels)
        total = sum(phases.values())
        print(f"\n{w.name}: serial phases of the pass over level 0 (one thread)")
        for name, seconds in phases.items():
            print(f"  {name:18s} {seconds:6.2f} s  {100 * seconds / total:5.1f} %")
        print(f"  {'total':18s} {total:6.2f} s")
        builds = {}
        for workers in (1, None):
            fresh_copy(images[w.name], target)
            builds[str(workers or "default")] = b = timed_build(target, args.levels, workers)
            print(
                f"  build, workers={workers or 'default'}: wall {b['wall_s']:.2f} s, "
                f"CPU {b['cpu_s']:.2f} s (user {b['user_s']:.2f}, sys {b['sys_s']:.2f}), "
                f"peak RSS {b.get('peak_rss_mib', float('nan')):.0f} MiB"
            )
            print("    tasks: " + ", ".join(f"{k} {v:.2f} s" for k, v in b["tasks"].items()))
        shutil.rmtree(target.parent, ignore_errors=True)
        report[w.name] = {"phases": phases, "builds": builds}
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
