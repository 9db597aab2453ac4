"""Pyramids built in object storage: napari-pyramids against tensorstore, on a local S3 server.

    python benchmarks/s3.py                        # 256 MiB, v2 and v3, 3 repeats
    python benchmarks/s3.py --sizes 1GiB --repeats 2 --verify

A local S3 server (moto's server mode, ``pip install "moto[server]"``) is started on a free
port of 127.0.0.1; nothing leaves the machine. For every timed run the image's level 0 and
group metadata are uploaded under a fresh prefix (not timed), then one tool builds levels
1..LEVELS-1 in a fresh process that is told where the server is only through the AWS
environment variables (``AWS_ENDPOINT_URL``, keys, region), and its wall time and peak RSS
are measured as in run.py (GNU time). Runs are interleaved, figures are medians.

- napari-pyramids: ``build_pyramid(zarrurl="s3://bench/.../img.zarr", num_levels=LEVELS)``,
  default budget (256 MiB) and workers;
- tensorstore: as in run.py (``ts.downsample`` of level k-1, "mean", written into a new
  zarr / zarr3 array with level 0's metadata), with its ``s3`` kvstore pointed at the server.

The server is one Python process sharing the machine's cores with the tool, so the figures
say how the two clients compare against the same (slow) server, not what S3 itself does.
``--verify`` downloads each tool's levels once and checks them with verify.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

BUCKET = "bench"
REGION = "us-east-1"
KEYS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret"}
TOOLS = ("ours", "tensorstore")


# --- the tools, one per process ------------------------------------------------------------


def _client():
    from obstore.store import S3Store

    return S3Store(BUCKET, client_options={"allow_http": True})


def _level0_document(prefix: str) -> tuple[int, dict]:
    import obstore

    for zarr_format, name in ((3, "zarr.json"), (2, ".zarray")):
        try:
            raw = obstore.get(_client(), f"{prefix}/0/{name}").bytes()
        except FileNotFoundError:
            continue
        return zarr_format, json.loads(bytes(raw))
    raise FileNotFoundError(f"{prefix}/0 holds no array")


def tool_ours(url: str, levels: int) -> None:
    from napari_pyramids import build_pyramid

    start = time.perf_counter()
    build_pyramid(zarrurl=url, num_levels=levels, coarsening_xy=2)
    print(json.dumps({"work_s": time.perf_counter() - start}), flush=True)


def tool_tensorstore(url: str, levels: int) -> None:
    import tensorstore as ts
    from tools import _level_metadata, _yx_factors

    prefix = url.split("/", 3)[3]
    zarr_format, doc = _level0_document(prefix)
    driver = "zarr" if zarr_format == 2 else "zarr3"

    def spec(k: int) -> dict:
        kvstore = {
            "driver": "s3",
            "bucket": BUCKET,
            "path": f"{prefix}/{k}/",
            "endpoint": os.environ["AWS_ENDPOINT_URL"],
            "aws_region": REGION,
        }
        return {"driver": driver, "kvstore": kvstore}

    start = time.perf_counter()
    for k in range(1, levels):
        source = ts.open(spec(k - 1)).result()
        view = ts.downsample(source, _yx_factors(source.rank, 1), "mean")
        target_spec = spec(k)
        target_spec["metadata"] = _level_metadata(zarr_format, doc, [int(n) for n in view.shape])
        target_spec["create"] = True
        ts.open(target_spec).result().write(view).result()
    print(json.dumps({"work_s": time.perf_counter() - start}), flush=True)


# --- the harness ----------------------------------------------------------------------------


def start_server() -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
            return process, endpoint
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("moto's server did not start; pip install 'moto[server]'")


def upload(image: Path, prefix: str) -> None:
    """Level 0 and the group metadata of ``image`` under ``prefix`` (many PUTs at once)."""
    from concurrent.futures import ThreadPoolExecutor

    import obstore

    client = _client()
    files = [p for p in image.rglob("*") if p.is_file() and p.name != ".complete"]
    files = [p for p in files if p.relative_to(image).parts[0] in ("0", ".zattrs", ".zgroup",
                                                                   "zarr.json")]  # fmt: skip

    def put(path: Path) -> None:
        obstore.put(client, f"{prefix}/{path.relative_to(image).as_posix()}", path.read_bytes())

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, files))


def remove(prefix: str) -> None:
    import obstore

    client = _client()
    for batch in obstore.list(client, prefix, chunk_size=1000):
        obstore.delete(client, [meta["path"] for meta in batch])


def download(prefix: str, target: Path, skip_level0: bool = True) -> Path:
    import obstore

    client = _client()
    for batch in obstore.list(client, prefix, chunk_size=1000):
        for meta in batch:
            rel = meta["path"][len(prefix) + 1 :]
            if skip_level0 and rel.startswith("0/"):
                continue
            path = target / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(bytes(obstore.get(client, meta["path"]).bytes()))
    return target


def main(argv: list[str] | None = None) -> int:
    import run
    import verify
    import workload as wl

    args = parse_args(argv)
    work = Path(args.work_dir)
    workloads = [wl.Workload(size, fmt) for size in args.sizes for fmt in args.formats]
    images = wl.generate(workloads, work / "images", log=run.log)
    server, endpoint = start_server()
    env = {**os.environ, **KEYS, "AWS_ENDPOINT_URL": endpoint, "AWS_REGION": REGION}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), str(HERE)) if p)
    os.environ.update({k: env[k] for k in (*KEYS, "AWS_ENDPOINT_URL", "AWS_REGION")})
    import boto3

    boto3.client("s3").create_bucket(Bucket=BUCKET)
    results: dict[str, dict[str, list]] = {}
    checks: dict[str, dict[str, str]] = {}
    logs = Path(tempfile.mkdtemp(prefix="s3bench-"))
    try:
        for w in workloads:
            results[w.name] = {tool: [] for tool in args.tools}
            for repeat in range(args.repeats):
                for tool in args.tools:
                    prefix = f"{w.name}/{tool}-{repeat}/img.zarr"
                    upload(images[w.name], prefix)
                    argv_tool = [sys.executable, str(Path(__file__)), "--tool", tool,
                                 f"s3://{BUCKET}/{prefix}", str(args.levels)]  # fmt: skip
                    wall, code, rss, cpu = run.timed_process(argv_tool, env, logs)
                    if code != 0:
                        error = (logs / "stderr").read_text(errors="replace")[-1500:]
                        raise RuntimeError(f"{tool} on {w.name} failed:\n{error}")
                    results[w.name][tool].append((wall, rss, cpu))
                    run.log(f"{w.name} {tool} #{repeat}: {wall:.2f} s, {rss:.0f} MiB, "
                            f"cpu {cpu:.2f} s")  # fmt: skip
                    if args.verify and repeat == 0:
                        local = Path(tempfile.mkdtemp(prefix="s3verify-"))
                        download(prefix, local)
                        summary = verify.compare_pyramid(images[w.name], local, args.levels)
                        checks.setdefault(w.name, {})[tool] = summary["summary"]
                        shutil.rmtree(local)
                    remove(prefix)
    finally:
        server.terminate()
        shutil.rmtree(logs, ignore_errors=True)
    print(report(results, checks, args))
    return 0


def report(results: dict, checks: dict, args: argparse.Namespace) -> str:
    lines = [
        f"Levels 1-{args.levels - 1} built on a local S3 server (moto {_version('moto')}), "
        f"{args.repeats} interleaved runs, medians (min-max):",
        "",
        "| image | tool | wall s | peak RSS MiB | CPU s | ratio to tensorstore |"
        + (" output |" if checks else ""),
        "|---|---|---|---|---|---|" + ("---|" if checks else ""),
    ]
    for name, tools in results.items():
        base = (
            statistics.median(r[0] for r in tools["tensorstore"])
            if "tensorstore" in tools
            else None
        )
        for tool, runs in tools.items():
            walls = [r[0] for r in runs]
            wall = statistics.median(walls)
            rss = statistics.median(r[1] for r in runs)
            cpu = statistics.median(r[2] for r in runs)
            ratio = f"{wall / base:.2f}x" if base else "-"
            check = f" {checks.get(name, {}).get(tool, '-')} |" if checks else ""
            label = (
                "napari-pyramids" if tool == "ours" else f"tensorstore {_version('tensorstore')}"
            )
            lines.append(
                f"| {name} | {label} | {wall:.2f} ({min(walls):.2f}-{max(walls):.2f}) | "
                f"{rss:.0f} | {cpu:.2f} | {ratio} |{check}"
            )
    return "\n".join(lines)


def _version(module: str) -> str:
    from importlib.metadata import version

    try:
        return version(module)
    except Exception:
        return "?"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["256MiB"])
    parser.add_argument("--formats", nargs="+", default=["v2-blosc-lz4", "v3-zstd"])
    parser.add_argument("--tools", nargs="+", default=list(TOOLS), choices=TOOLS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--levels", type=int, default=5)
    parser.add_argument("--verify", action="store_true", help="check each tool's levels once")
    parser.add_argument("--work-dir", default=str(HERE / ".work"))
    return parser.parse_args(argv)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--tool":
        _, _, name, url, levels = sys.argv
        {"ours": tool_ours, "tensorstore": tool_tensorstore}[name](url, int(levels))
        sys.exit(0)
    sys.exit(main())
