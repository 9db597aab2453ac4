"""Who does the chunk and shard work on sharded zarr v3: one build per engine, side by side.

    python benchmarks/shard_engines.py                       # 256 MiB, 3 repeats
    python benchmarks/shard_engines.py --shape 2 4 8192 8192 # 1 GiB

Every engine runs our full ``build_pyramid`` (levels 1-5, 2x2 mean) on the same sharded
NGFF 0.5 image (uint16, 256x256 inner chunks in 1024x1024 shards, blosc-lz4): only the
:class:`~napari_pyramids.storage.LevelArray` under the storage seam changes.

- ``ours``: :class:`~napari_pyramids.storage.shards.ShardArray` (one read per shard,
  inner chunks decoded by numcodecs);
- ``zarrs``: zarr-python with the zarrs codec pipeline (Rust), through ``ZarrArray`` on
  zarr's own LocalStore (zarrs ignores any other store class);
- ``zarr``: zarr-python's own Python pipeline through ``ZarrArray`` (the fallback before);
- ``tensorstore``: a LevelArray that reads and writes regions with tensorstore;
- ``zarrista``: a LevelArray over zarrista (zarrs' Rust core called synchronously, 0.1);
- ``ts-downsample``: not our build, the peer: tensorstore's downsample driver, level by level.

Each timed run is a fresh process on a fresh copy of level 0, engines interleaved, timed by
GNU time (wall, peak RSS); after each engine's first run its levels are checked against
ours (tensorstore reads them back).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ENGINES = ("ours", "zarrs", "zarr", "tensorstore", "zarrista", "ts-downsample")
LEVELS = 6
INNER, SHARD = 256, 1024


def _shards_image(path: Path, shape: tuple[int, ...]) -> None:
    """Level 0 of a sharded NGFF 0.5 image with the benchmark's synthetic planes."""
    import zarr

    sys.path.insert(0, str(HERE))
    import workload as wl

    group = zarr.open_group(path, mode="w-", zarr_format=3)
    array = group.create_array(
        "0",
        shape=shape,
        chunks=(1, 1, INNER, INNER),
        shards=(1, 1, SHARD, SHARD),
        dtype="uint16",
        fill_value=0,
        compressors=zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
        dimension_names=["c", "z", "y", "x"],
    )
    for c, z, plane in wl.planes(SimpleNamespace(shape=shape)):
        array[c, z] = plane
    axes = [{"name": "c", "type": "channel"}] + [
        {"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"
    ]
    scale = [{"type": "scale", "scale": [1.0, 1.0, 0.325, 0.325]}]
    group.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [
            {
                "name": path.name,
                "axes": axes,
                "datasets": [{"path": "0", "coordinateTransformations": scale}],
            }
        ],
    }
    (path / ".complete").write_text("")


class TensorstoreArray:
    """A LevelArray whose reads and writes are tensorstore's (one region per call)."""

    def __init__(self, store, key, info):
        import tensorstore as ts

        self.shape, self.dtype = info.shape, info.dtype
        self.chunks = self.write_unit = info.write_unit
        spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(store.path(key))}}
        self._array = ts.open(spec, read=True, write=True).result()

    def read(self, region):
        return self._array[region].read().result()

    def read_parts(self, region):
        yield (0,) * len(region), self.read(region)

    def write(self, region, data, write_empty):
        self._array[region].write(data).result()


class ZarristaArray(TensorstoreArray):
    """A LevelArray whose reads and writes are zarrs' (through zarrista, synchronously)."""

    def __init__(self, store, key, info):
        import zarrista

        self.shape, self.dtype = info.shape, info.dtype
        self.chunks = self.write_unit = info.write_unit
        self._array = zarrista.Array.open(zarrista.store.FilesystemStore(store.path(key)), "/")

    def read(self, region):
        import numpy as np

        return np.asarray(self._array.retrieve_array_subset(region))

    def write(self, region, data, write_empty):
        import numpy as np

        data = np.ascontiguousarray(data)
        self._array.store_array_subset(region, data, store_empty_chunks=write_empty)


def build(engine: str, image: str) -> None:
    """One build with ``engine`` under the storage seam (the timed process)."""
    import napari_pyramids.engine as engine_module
    from napari_pyramids import build_pyramid
    from napari_pyramids.storage import arrays

    if engine in ("zarrs", "zarr"):
        arrays.open_shard_array = lambda *args: None  # ZarrArray for the sharded levels
        arrays.shards.supports = lambda info: False  # and zarr checks the metadata
    if engine == "zarrs":
        import zarr

        from napari_pyramids.storage.store import LocalStore

        zarr.config.set({"codec_pipeline.path": "zarrs.ZarrsCodecPipeline"})
        # zarrs takes only zarr's own store classes: on our checked subclass zarr-python
        # quietly keeps its Python pipeline. zarrs then reads files itself, unchecked.
        LocalStore.zarr_store = lambda self, prefix, read_only, max_file_bytes=None: (
            zarr.storage.LocalStore(self.path(prefix), read_only=read_only)
        )
        zarr.storage.LocalStore._check = lambda self, key: None
    if engine == "tensorstore":
        engine_module.open_level_array = TensorstoreArray
    if engine == "zarrista":
        engine_module.open_level_array = ZarristaArray
    start = time.perf_counter()
    if engine == "ts-downsample":
        ts_downsample(image)
    else:
        build_pyramid(zarrurl=image, num_levels=LEVELS, coarsening_xy=2)
    print(json.dumps({"work_s": time.perf_counter() - start}), flush=True)


def ts_downsample(image: str) -> None:
    """tensorstore's downsample driver (mean), level k from stored level k-1, sharded."""
    import tensorstore as ts

    doc = json.loads((Path(image) / "0" / "zarr.json").read_text())
    for k in range(1, LEVELS):
        spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": f"{image}/{k - 1}"}}
        view = ts.downsample(ts.open(spec).result(), [1, 1, 2, 2], "mean")
        shape = [int(n) for n in view.shape]
        meta = {key: v for key, v in doc.items() if key != "attributes"}
        meta["shape"] = shape
        outer = [min(c, n) for c, n in zip([1, 1, SHARD, SHARD], shape, strict=True)]
        meta["chunk_grid"] = {"name": "regular", "configuration": {"chunk_shape": outer}}
        sharding = json.loads(json.dumps(doc["codecs"][0]))
        inner = [min(c, o) for c, o in zip([1, 1, INNER, INNER], outer, strict=True)]
        sharding["configuration"]["chunk_shape"] = inner
        meta["codecs"] = [sharding]
        target = {"driver": "zarr3", "kvstore": {"driver": "file", "path": f"{image}/{k}"},
                  "metadata": meta, "create": True}  # fmt: skip
        ts.open(target).result().write(view).result()


def level_digests(image: Path) -> list[str]:
    """A digest of every new level's values, read back by tensorstore."""
    import tensorstore as ts

    out = []
    for k in range(1, LEVELS):
        spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(image / str(k))}}
        data = ts.open(spec, read=True).result().read().result()
        out.append(hashlib.sha256(data.tobytes()).hexdigest()[:16])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", type=int, nargs=4, default=[2, 4, 4096, 4096])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    parser.add_argument("--work-dir", type=Path, default=HERE / ".work" / "shard-engines")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from run import fresh_copy, timed_process

    shape = tuple(args.shape)
    mib = 2 * int(__import__("math").prod(shape)) // 2**20
    source = args.work_dir / f"{'x'.join(map(str, shape))}.ome.zarr"
    if not (source / ".complete").exists():
        print(f"generating {source} ({mib} MiB, not timed)", flush=True)
        import shutil

        shutil.rmtree(source, ignore_errors=True)
        source.parent.mkdir(parents=True, exist_ok=True)
        _shards_image(source, shape)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), env.get("PYTHONPATH")) if p)
    runs: dict[str, list[tuple[float, float, float]]] = {e: [] for e in args.engines}
    digests: dict[str, list[str]] = {}
    for repeat in range(args.repeats):
        for engine in args.engines:
            image = args.work_dir / "run" / "image.ome.zarr"
            fresh_copy(source, image)
            logs = args.work_dir / "logs" / f"{engine}-{repeat}"
            logs.mkdir(parents=True, exist_ok=True)
            argv = [sys.executable, str(Path(__file__).resolve()), "--build", engine, str(image)]
            wall, code, rss, cpu = timed_process(argv, env, logs)
            if code:
                print(f"{engine}: failed\n{(logs / 'stderr').read_text()[-1500:]}", flush=True)
                continue
            runs[engine].append((wall, rss, cpu))
            print(f"{engine} #{repeat}: {wall:.2f} s, {rss:.0f} MiB, cpu {cpu:.1f} s", flush=True)
            if engine not in digests:
                digests[engine] = level_digests(image)
    print(f"\nsharded v3, {mib} MiB {shape}, {INNER}² in {SHARD}² shards, blosc-lz4, "
          f"{LEVELS} levels; medians of {args.repeats}\n")  # fmt: skip
    print("| engine | wall s | CPU s | peak RSS MiB | levels equal to ours |")
    print("|---|---|---|---|---|")
    for engine, values in runs.items():
        if values:
            wall, rss, cpu = (statistics.median(v[i] for v in values) for i in range(3))
            same = "yes" if digests.get(engine) == digests.get("ours") else "NO"
            print(f"| {engine} | {wall:.2f} | {cpu:.2f} | {rss:.0f} | {same} |")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--build":
        build(sys.argv[2], sys.argv[3])
    else:
        sys.exit(main())
