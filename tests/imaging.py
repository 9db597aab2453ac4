"""Test helpers: OME-Zarr images written with plain zarr calls, and independent references.

Nothing here imports napari_pyramids: images are written the way a third party would, and
the reference pyramid is the straightforward per-level numpy computation.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr

AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
DEFAULT_AXES = {2: "yx", 3: "zyx", 4: "czyx", 5: "tczyx"}
CHANGE_RECORD = ".napari-pyramids-record.json"


def write_image(
    path: Path,
    data: np.ndarray,
    *,
    zarr_format: int = 2,
    chunks: Sequence[int] | None = None,
    shards: Sequence[int] | None = None,
    axes: str | None = None,
    scale: Sequence[float] | None = None,
    translation: Sequence[float] | None = None,
    level_path: str = "0",
    compressor: str = "default",
    extra_attrs: dict[str, Any] | None = None,
    labels: bool = False,
    metadata: bool = True,
) -> Path:
    """Write ``data`` as level 0 of an OME-Zarr image (NGFF 0.4 on v2, 0.5 on v3)."""
    axes = axes or DEFAULT_AXES[data.ndim]
    chunks = tuple(chunks or tuple(min(n, 64) for n in data.shape))
    group = zarr.open_group(path, mode="w", zarr_format=zarr_format)
    kwargs: dict[str, Any] = {}
    if zarr_format == 2:
        kwargs["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
        if compressor == "blosc-lz4":
            from numcodecs import Blosc

            kwargs["compressors"] = Blosc(cname="lz4", clevel=5, shuffle=Blosc.SHUFFLE)
    else:
        kwargs["dimension_names"] = list(axes)
        if shards is not None:
            kwargs["shards"] = tuple(shards)
        if compressor == "zstd":
            kwargs["compressors"] = zarr.codecs.ZstdCodec(level=3)
    array = group.create_array(
        level_path, shape=data.shape, chunks=chunks, dtype=data.dtype, **kwargs
    )
    array[...] = data
    if not metadata:
        return path
    multiscale: dict[str, Any] = {
        "name": path.name,
        "axes": [
            {"name": a, "type": AXIS_TYPES[a], **({"unit": "micrometer"} if a in "zyx" else {})}
            for a in axes
        ],
        "datasets": [
            {
                "path": level_path,
                "coordinateTransformations": [
                    {"type": "scale", "scale": list(scale or [1.0] * data.ndim)},
                    *(
                        [{"type": "translation", "translation": list(translation)}]
                        if translation is not None
                        else []
                    ),
                ],
            }
        ],
    }
    ome: dict[str, Any] = {"multiscales": [multiscale]}
    if labels:
        ome["image-label"] = {"version": "0.4" if zarr_format == 2 else "0.5"}
    ome.update(extra_attrs or {})
    if zarr_format == 2:
        multiscale["version"] = "0.4"
        group.attrs.update(ome)
    else:
        group.attrs.update({"ome": {"version": "0.5", **ome}})
    return path


def reference_level(
    data: np.ndarray, factors: Sequence[int], method: str, edge: str = "trim"
) -> np.ndarray:
    """One level down, window by window, with plain numpy reductions (slow but obvious)."""
    if edge == "trim":
        data = data[
            tuple(slice(0, (n // f) * f) for n, f in zip(data.shape, factors, strict=True))
        ]
    out_shape = tuple(-(-n // f) for n, f in zip(data.shape, factors, strict=True))
    out = np.empty(out_shape, dtype=data.dtype)
    work = data.astype(np.uint8) if data.dtype == bool else data
    for index in itertools.product(*(range(n) for n in out_shape)):
        window = work[
            tuple(slice(i * f, (i + 1) * f) for i, f in zip(index, factors, strict=True))
        ]
        out[index] = _reduce_window(window, method, data.dtype)
    return out


def _reduce_window(window: np.ndarray, method: str, dtype: np.dtype) -> Any:
    values = window.ravel()
    integer = dtype.kind in "iub"
    if method == "mean":
        if integer:
            # Exact rational mean with Python integers, rounded half to even.
            total, count = sum(int(v) for v in values), len(values)
            q, r = divmod(total, count)
            if 2 * r > count or (2 * r == count and q % 2):
                q += 1
            return q
        return np.float64(sum(float(v) for v in values) / len(values))
    if method == "median":
        med = np.median(values)
        return np.rint(med) if integer else med
    if method == "min":
        return values.min()
    if method == "max":
        return values.max()
    if method == "mode":
        uniques, counts = np.unique(values, return_counts=True)
        return uniques[np.argmax(counts)]
    if method == "nearest":
        return values[0]
    raise ValueError(method)


def reference_pyramid(
    data: np.ndarray, factors: Sequence[int], num_levels: int, method: str, edge: str = "trim"
) -> list[np.ndarray]:
    """Levels 0..num_levels-1, each computed from the previous one."""
    levels = [data]
    for _ in range(1, num_levels):
        levels.append(reference_level(levels[-1], factors, method, edge))
    return levels


def metadata_file(root: Path) -> Path:
    """The file holding a group's NGFF attributes (0.4: .zattrs; 0.5: zarr.json)."""
    return root / ("zarr.json" if (root / "zarr.json").exists() else ".zattrs")


def read_attrs(path: Path) -> dict[str, Any]:
    """The NGFF attributes of a group (0.4: .zattrs; 0.5: zarr.json attributes.ome)."""
    file = metadata_file(path)
    document = json.loads(file.read_text())
    return document["attributes"]["ome"] if file.name == "zarr.json" else document


def level_paths(root: Path) -> list[str]:
    """The level paths the image's first multiscale lists, in order."""
    return [d["path"] for d in read_attrs(root)["multiscales"][0]["datasets"]]


def file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every regular file under ``folder``, following links to read; the change
    record (kept inside level 1) is left out: stamps of when it was made, not image content."""
    return {
        str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(folder.rglob("*"))
        if f.is_file() and f.name != CHANGE_RECORD
    }


def tree_snapshot(root: Path) -> dict[str, str]:
    """Every file and link below ``root`` (and beside it) with a hash of its content."""
    snapshot = {}
    for folder, dirs, files in os.walk(root.parent):
        for name in sorted(dirs + files):
            full = Path(folder) / name
            rel = str(full.relative_to(root.parent))
            if name == CHANGE_RECORD:
                # Stamps of when and where it was made, not image content: a cache.
                continue
            if full.is_symlink():
                snapshot[rel] = "link:" + os.readlink(full)
            elif full.is_file():
                snapshot[rel] = hashlib.sha256(full.read_bytes()).hexdigest()
            else:
                snapshot[rel] = "dir"
    return snapshot


def direct_array(path: Path) -> Any:
    """The zarr array folder at ``path`` opened for direct chunk I/O, or None if its layout
    is read through zarr-python."""
    from napari_pyramids.ome.image import read_array_info
    from napari_pyramids.storage import LocalStore
    from napari_pyramids.storage.chunkio import open_chunk_array

    path = Path(path)
    store = LocalStore(path.parent)
    info = read_array_info(store, path.name, store.array_format(path.name))
    return open_chunk_array(store, path.name, info)


def age_files(root: Path, seconds: float = 3600) -> None:
    """Date every file of the image an hour back: the record then holds plain timestamps
    (no racily-clean unit compared by content), as for any image not written just now."""
    past = time.time_ns() - int(seconds * 1e9)
    for folder, _, files in os.walk(root):
        for name in files:
            os.utime(os.path.join(folder, name), ns=(past, past))
