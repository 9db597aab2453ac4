"""Pyramid-building benchmark: napari-pyramids against its peers, in one run on one machine.

    python benchmarks/run.py --quick        # 256 MiB images, 2 repeats (a few minutes)
    python benchmarks/run.py                # 256 MiB, 1 GiB and 4 GiB, 3 repeats (long)

See benchmarks/README.md for what is measured and how. Everything the run needs that is not
in the current environment (the own environments of the seed and of ngio, the images) is
made once under the work folder (default benchmarks/.work/, gitignored).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import verify  # noqa: E402
import workload as wl  # noqa: E402

TIME = "/usr/bin/time"
LABELS = {
    "ours": "napari-pyramids",
    "tensorstore": "tensorstore downsample",
    "zarrs": "zarr-python + zarrs pipeline, naive per level",
    "ome-zarr-pyramid": "ome-zarr-pyramid 0.4",
    "ngio": "ngio 1.1",
    "seed": "fractal-tasks-core 1.4 (seed)",
    "ngff-zarr": "ngff-zarr",
    "floor-tensorstore": "read floor (tensorstore)",
    "floor-zarr": "read floor (zarr-python)",
}
BUILDERS = ("ours", "tensorstore", "zarrs", "ome-zarr-pyramid", "ngio", "seed", "ngff-zarr")
ALL_TOOLS = (*BUILDERS, "floor-tensorstore", "floor-zarr")
SEED_V2_ONLY = (
    "fractal-tasks-core 1.x reads and writes zarr v2 only; not run on the zarr v3 images"
)
# Peers run in the main environment when their module imports: (module, pip requirement).
MAIN_ENV_PEERS = {
    "tensorstore": ("tensorstore", "tensorstore"),
    "zarrs": ("zarrs", "zarrs"),
    "ome-zarr-pyramid": ("ome_zarr_pyramid", "ome-zarr-pyramid==0.4.*"),
    "ngff-zarr": ("ngff_zarr", "ngff-zarr"),
    "floor-tensorstore": ("tensorstore", "tensorstore"),
}


@dataclass(frozen=True)
class OwnEnv:
    """A peer whose dependencies conflict with ours: its own venv under the work folder."""

    folder: str
    requirement: str
    probe: str  # a module that imports once the install worked
    why: str  # why it cannot share our environment
    versions: tuple[str, ...]  # distributions whose versions the report names


OWN_ENVS = {
    "seed": OwnEnv(
        "seed-venv",
        "fractal-tasks-core==1.4.*",
        "fractal_tasks_core.pyramids",
        "zarr 2",
        ("fractal-tasks-core", "zarr", "dask", "numpy"),
    ),
    "ngio": OwnEnv(
        "ngio-venv",
        "ngio==1.1.*",
        "ngio",
        "pandas < 3, through anndata",
        ("ngio", "zarr", "dask", "numpy", "pandas"),
    ),
}
NOT_POSSIBLE = {
    "ome-zarr": (
        "ome-zarr-py cannot add levels to an existing level 0: write_image / "
        "OMEZarrMultiscale.to_ome_zarr write a whole new image (level 0 included, as s0), "
        "and on an existing group without overwrite they write no pixel data. Not run."
    ),
}


@dataclass
class Run:
    """One timed process: wall time and peak RSS, or why it failed."""

    tool: str
    image: str
    repeat: int
    wall_s: float
    work_s: float | None
    peak_rss_mib: float
    cpu_s: float
    ok: bool
    error: str = ""


@dataclass
class Results:
    started: str
    command: str
    machine: dict
    versions: dict
    levels: int
    runs: list[Run] = field(default_factory=list)
    checks: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- environments ---------------------------------------------------------------------------


def own_python(work: Path, tool: str) -> Path | None:
    """The python of a peer's own virtual environment, created on first use."""
    env = OWN_ENVS[tool]
    venv = work / env.folder
    python = venv / "bin" / "python"
    probe = [str(python), "-c", f"import {env.probe}"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    log(f"creating the {tool} environment in {venv} ({env.requirement}; it needs {env.why})")
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", env.requirement]
    done = subprocess.run(pip, capture_output=True, text=True)
    if done.returncode != 0 or subprocess.run(probe, capture_output=True).returncode != 0:
        log(f"could not install {env.requirement}:\n{done.stderr[-2000:]}")
        return None
    return python


@functools.cache
def importable(module: str) -> bool:
    code = f"import {module}"
    return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def package_versions(envs: dict[str, Path]) -> dict:
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for name in (
        "numpy",
        "zarr",
        "numcodecs",
        "dask",
        "tensorstore",
        "zarrs",
        "ome-zarr-pyramid",
        "dyna-zarr",
        "ngff-zarr",
        "ome-zarr",
    ):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    rev = subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True, text=True
    )
    versions["napari-pyramids"] = rev.stdout.strip() or "unknown"
    for tool, python in envs.items():
        names = OWN_ENVS[tool].versions
        code = (
            "from importlib import metadata as m; print(' '.join(f'{p}=={m.version(p)}' for p in"
            f" {names!r}))"
        )
        out = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
        versions[f"{tool} environment"] = out.stdout.strip()
    return versions


def machine(work: Path) -> dict:
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
    df = subprocess.run(
        ["df", "-h", "--output=source,fstype,size,avail", str(work)],
        capture_output=True,
        text=True,
    )
    disk = " ".join(df.stdout.splitlines()[-1].split()) if df.returncode == 0 else "unknown"
    return {
        "nproc": os.cpu_count(),
        "usable cores": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "ram_gib": round(mem_kib / 2**20, 1),
        "disk (source fstype size avail)": disk,
        "kernel": platform.release(),
        "load average at start": os.getloadavg(),
    }


# --- one timed run --------------------------------------------------------------------------


def fresh_copy(source: Path, target: Path) -> None:
    """Level 0 and the group metadata only; flushed to disk so no tool pays for the copy."""
    shutil.rmtree(target.parent, ignore_errors=True)
    target.mkdir(parents=True)
    for name in (".zattrs", ".zgroup", "zarr.json"):
        if (source / name).exists():
            shutil.copy2(source / name, target / name)
    shutil.copytree(source / "0", target / "0")
    os.sync()


def timed_process(argv: list[str], env: dict, logs: Path) -> tuple[float, int, float, float]:
    """Run ``argv``; wall seconds, exit status, peak RSS (MiB) and CPU seconds of the process.

    A child forked from this (large) Python process would inherit its memory high-water
    mark through ``exec``, so the tool is started by GNU time (``/usr/bin/time``, a small C
    program) which reports the peak RSS of its own child. Without it, a minimal Python
    launcher does the same and adds its own few MiB.
    """
    report = logs / "rusage"
    if os.path.exists(TIME):
        launcher = [TIME, "-f", "%M %U %S", "-o", str(report)]
    else:
        launcher = [sys.executable, "-I", "-S", str(HERE / "launcher.py"), str(report)]
    with open(logs / "stdout", "wb") as out, open(logs / "stderr", "wb") as err:
        start = time.perf_counter()
        code = subprocess.call([*launcher, *argv], env=env, stdout=out, stderr=err, cwd=logs)
        wall = time.perf_counter() - start
    try:
        peak_kib, user, system = report.read_text().split()[-3:]
        return wall, code, int(peak_kib) / 1024, float(user) + float(system)
    except (OSError, ValueError):
        return wall, code, 0.0, float("nan")


def run_tool(tool: str, image: Path, levels: int, envs: dict[str, Path], logs: Path) -> tuple:
    python = str(envs.get(tool, sys.executable))
    env = dict(os.environ)
    if tool == "ours":
        # Measure this checkout, whatever napari-pyramids the environment has installed.
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO / "src"), env.get("PYTHONPATH", "")) if p
        )
    argv = [python, str(HERE / "tools.py"), tool, str(image), str(levels)]
    logs.mkdir(parents=True, exist_ok=True)
    wall, code, rss_mib, cpu_s = timed_process(argv, env, logs)
    stdout = (logs / "stdout").read_text(errors="replace").strip().splitlines()
    work_s = None
    for line in reversed(stdout):
        if line.startswith("{"):
            work_s = json.loads(line).get("work_s")
            break
    error = "" if code == 0 else (logs / "stderr").read_text(errors="replace")[-1500:]
    return wall, work_s, rss_mib, cpu_s, code == 0, error


# --- the whole benchmark --------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    tools = [t for t in ALL_TOOLS if t in args.tools]
    skipped: dict[str, str] = dict(NOT_POSSIBLE)
    if not os.path.exists(TIME):
        log(f"{TIME} not found (apt-get install time): launcher.py measures peak RSS instead")
    workloads = [wl.Workload(s, f) for s in args.sizes for f in args.formats]
    if "seed" in tools and all(w.zarr_format != 2 for w in workloads):
        tools.remove("seed")
        skipped["seed on zarr v3"] = SEED_V2_ONLY
    envs: dict[str, Path] = {}
    for tool in [t for t in tools if t in OWN_ENVS]:
        python = own_python(work, tool)
        if python is None:
            tools.remove(tool)
            skipped[tool] = f"{OWN_ENVS[tool].requirement} could not be installed (see the log)"
        else:
            envs[tool] = python
    for tool, (module, package) in MAIN_ENV_PEERS.items():
        if tool in tools and not importable(module):
            tools.remove(tool)
            skipped[tool] = f"{module} is not installed: pip install {package!r}"

    images = wl.generate(workloads, work / "images", log=log)
    results = Results(
        started=datetime.datetime.now().isoformat(timespec="seconds"),
        command=" ".join(["python", "benchmarks/run.py", *(argv or sys.argv[1:])]),
        machine=machine(work),
        versions=package_versions(envs),
        levels=args.levels,
        skipped=skipped,
    )
    for w in workloads:
        for repeat in range(args.repeats):
            for tool in tools:
                if tool == "seed" and w.zarr_format != 2:
                    results.skipped["seed on zarr v3"] = SEED_V2_ONLY
                    continue
                target = work / "runs" / tool / f"{w.name}.ome.zarr"
                fresh_copy(images[w.name], target)
                wall, work_s, rss, cpu, ok, error = run_tool(
                    tool, target, args.levels, envs, work / "logs" / tool / w.name
                )
                results.runs.append(Run(tool, w.name, repeat, wall, work_s, rss, cpu, ok, error))
                state = "ok" if ok else "FAILED"
                log(
                    f"{w.name} #{repeat + 1} {tool}: {wall:.2f} s, CPU {cpu:.2f} s, "
                    f"{rss:.0f} MiB, {state}"
                )
                if not ok:
                    log(error)
                if ok and repeat == 0 and tool in BUILDERS and not args.no_verify:
                    results.checks.setdefault(w.name, {})[tool] = verify.compare_pyramid(
                        images[w.name], target, args.levels
                    )
                    log(f"  output check: {results.checks[w.name][tool]['summary']}")
                shutil.rmtree(target.parent, ignore_errors=True)
        save(results, args.output)
    table = markdown(results, workloads, tools)
    print(table)
    if args.output:
        args.output.with_suffix(".md").write_text(table)
    return 0 if all(r.ok for r in results.runs) else 1


def save(results: Results, output: Path | None) -> None:
    if output is None:
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    data = asdict(results)
    output.with_suffix(".json").write_text(json.dumps(data, indent=1, default=str))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="256 MiB only, 2 repeats")
    parser.add_argument("--sizes", nargs="+", choices=list(wl.SIZES), default=None)
    parser.add_argument("--formats", nargs="+", choices=wl.FORMATS, default=list(wl.FORMATS))
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--levels", type=int, default=5, help="levels including 0 (default 5)")
    parser.add_argument("--tools", nargs="+", choices=ALL_TOOLS, default=list(ALL_TOOLS))
    parser.add_argument("--work-dir", type=Path, default=HERE / ".work")
    parser.add_argument("--no-verify", action="store_true", help="skip the output checks")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="write raw results (.json) and the table (.md) here; default "
        "benchmarks/results/<date>",
    )
    args = parser.parse_args(argv)
    if args.sizes is None:
        args.sizes = ["256MiB"] if args.quick else list(wl.SIZES)
    if args.repeats is None:
        args.repeats = 2 if args.quick else 3
    if args.output is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        args.output = HERE / "results" / stamp
    return args


# --- the report -----------------------------------------------------------------------------


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarise(results: Results, image: str, tool: str) -> dict | None:
    runs = [r for r in results.runs if r.image == image and r.tool == tool and r.ok]
    if not runs:
        return None
    walls = [r.wall_s for r in runs]
    return {
        "wall": _median(walls),
        "min": min(walls),
        "max": max(walls),
        "rss": _median([r.peak_rss_mib for r in runs]),
        "cpu": _median([r.cpu_s for r in runs]),
    }


def markdown(results: Results, workloads: list[wl.Workload], tools: list[str]) -> str:
    m, v = results.machine, results.versions
    lines = [
        f"### Pyramid build benchmark, {results.started[:10]}",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['ram_gib']} GiB RAM, disk "
        f"`{m['disk (source fstype size avail)']}`, Linux {m['kernel']}; load average at "
        f"start {', '.join(f'{x:.2f}' for x in m['load average at start'])}.",
        "",
        "Versions: " + "; ".join(f"{k} {val}" for k, val in v.items()) + ".",
        "",
        f"Command: `{results.command}`. Each figure is the median of the repeats (min–max), "
        "each run a fresh process on a fresh copy of level 0 (page cache warm); "
        f"{results.levels} levels, 2x2 mean in Y and X. CPU = user + sys seconds of the "
        "process (a steadier measure than wall time on a shared machine). Ratio = ours ÷ that "
        "tool, median wall times (below 1: ours is faster).",
        "",
        "| image | tool | wall s, median (min–max) | CPU s | peak RSS MiB | ours ÷ tool (wall) "
        "| output vs numpy |",
        "|---|---|---|---|---|---|---|",
    ]
    for w in workloads:
        mine = summarise(results, w.name, "ours")
        first = True
        for tool in tools:
            s = summarise(results, w.name, tool)
            if s is None:
                failed = any(r.tool == tool and r.image == w.name for r in results.runs)
                if not failed:
                    continue
                cells = ["failed", "", "", "", ""]
            else:
                if tool == "ours":
                    ratio = "1"
                else:
                    ratio = f"{mine['wall'] / s['wall']:.2f}" if mine else "–"
                check = results.checks.get(w.name, {}).get(tool, {}).get("summary", "–")
                cells = [
                    f"{s['wall']:.2f} ({s['min']:.2f}–{s['max']:.2f})",
                    f"{s['cpu']:.2f}",
                    f"{s['rss']:.0f}",
                    ratio,
                    check,
                ]
            name = f"{w.size} {w.fmt}" if first else ""
            first = False
            lines.append(f"| {name} | {LABELS[tool]} | " + " | ".join(cells) + " |")
    lines += ["", *scaling_lines(results, workloads)]
    if results.skipped:
        lines += ["", "Not run:"]
        lines += [f"- {k}: {why}" for k, why in results.skipped.items()]
    return "\n".join(lines) + "\n"


def scaling_lines(results: Results, workloads: list[wl.Workload]) -> list[str]:
    """Seconds per GiB of ours at each size: flat means time grows linearly with voxels."""
    out = []
    for fmt in dict.fromkeys(w.fmt for w in workloads):
        parts = []
        for w in (w for w in workloads if w.fmt == fmt):
            s = summarise(results, w.name, "ours")
            if s:
                parts.append(f"{w.size}: {s['wall'] / (w.nbytes / 2**30):.2f} s/GiB")
        if len(parts) > 1:
            out.append(f"Scaling of napari-pyramids ({fmt}): " + ", ".join(parts) + ".")
    return out


if __name__ == "__main__":
    sys.exit(main())
