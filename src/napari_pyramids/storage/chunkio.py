"""Whole-chunk reads and writes straight to files and numcodecs, for the common array layouts.

zarr-python spends more time in its asyncio machinery and buffer copies than blosc spends
decoding (profiled on a 1 GiB uint16 image), so block tasks read and write plain chunk files
themselves when an array uses a layout this module reproduces exactly:

- zarr v2: C order, no filters, no compressor or one whose output can be capped at the
  chunk's size (blosc, zstd, lz4, zlib, gzip, bz2, lzma), little-endian (or
  single-byte) integer or float data, a finite numeric fill value;
- zarr v3: the ``bytes`` codec (little-endian) optionally followed by one of ``blosc``,
  ``zstd`` or ``gzip``, regular chunks without sharding, ``default`` or ``v2`` chunk keys,
  the same data types and fill values.

Anything else (sharding, other codecs, big-endian, bool, NaN fill ...) returns None from
:func:`open_chunk_array` and the engine uses zarr-python. Chunks are written as zarr-python
writes them: edge chunks padded with the fill value, chunks equal to the fill value skipped
unless ``write_empty_chunks``; tests compare the files byte for byte with zarr-python's.

Chunk files are untrusted input: a link to a device, a FIFO, a file larger than any chunk
can encode to, a chunk that does not decode, or one that inflates past its size is refused
with one PyramidError naming the file, without reading or allocating more than a chunk.
"""

from __future__ import annotations

import bz2
import itertools
import json
import lzma
import os
import stat
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numcodecs
import numpy as np

from ..errors import PyramidError
from ..untrusted import finite_number

_NUMERIC_V3 = {
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "int8",
    "int16",
    "int32",
    "int64",
    "float32",
    "float64",
}
_V3_COMPRESSORS = {"blosc", "zstd", "gzip"}
_BLOSC_SHUFFLE = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}
# zarr-python passes blosc's typesize explicitly from numcodecs 0.16 on (numcodecs#713).
_BLOSC_TYPESIZE = tuple(int(p) for p in numcodecs.__version__.split(".")[:2]) >= (0, 16)


@dataclass(frozen=True)
class ChunkArray:
    """A zarr array on local disk whose chunks this module reads and writes directly."""

    path: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    dtype: np.dtype
    fill_value: Any
    codec: dict[str, Any] | None  # numcodecs configuration, None for no compression
    key_prefix: str
    separator: str
    bytes_input: bool = False
    _local: threading.local = field(default_factory=threading.local, compare=False, repr=False)

    def __reduce__(self) -> tuple[Any, ...]:
        # Sent to dask.distributed workers by path; each process re-reads the metadata.
        return (_reopen, (self.path,))

    @property
    def _codec(self) -> Any:
        codec = getattr(self._local, "codec", None)
        if codec is None and self.codec is not None:
            codec = self._local.codec = numcodecs.get_codec(dict(self.codec))
        return codec

    def chunk_path(self, index: tuple[int, ...]) -> str:
        return os.path.join(self.path, self.key_prefix + self.separator.join(map(str, index)))

    def chunk_region(self, index: tuple[int, ...]) -> tuple[slice, ...]:
        return tuple(
            slice(i * c, min((i + 1) * c, n))
            for i, c, n in zip(index, self.chunks, self.shape, strict=True)
        )

    def chunk_indices(self, region: tuple[slice, ...]) -> Iterator[tuple[int, ...]]:
        """Every chunk that ``region`` touches, in row-major order."""
        ranges = [
            range(r.start // c, -(-r.stop // c)) for r, c in zip(region, self.chunks, strict=True)
        ]
        return itertools.product(*ranges)

    def read_chunk(self, index: tuple[int, ...]) -> np.ndarray:
        """The whole decoded chunk (edge chunks include their padding)."""
        path = self.chunk_path(index)
        out = np.empty(self.chunks, dtype=self.dtype)
        raw = _read_chunk_file(path, chunk_file_limit(out.nbytes))
        if raw is None:
            out[...] = self.fill_value
            return out
        flat = out.view(np.uint8).reshape(-1)
        try:
            data = _decode(self._codec, self.codec, raw, flat)
            if data is not None and not _same_memory(data, flat):
                decoded = np.frombuffer(data, dtype=np.uint8)
                if decoded.size != flat.size:
                    raise ValueError(f"{decoded.size} bytes decoded for a {flat.size}-byte chunk")
                flat[...] = decoded
        except (ValueError, RuntimeError, TypeError, OSError, EOFError, zlib.error) as exc:
            detail = " ".join(str(exc).split())[:160]
            raise PyramidError(
                f"{self.path}: a chunk could not be read ({path}: {type(exc).__name__}: "
                f"{detail}); the file is corrupt or crafted. Restore the image."
            ) from None
        return out

    def read(self, region: tuple[slice, ...]) -> np.ndarray:
        """The values of ``region`` (a tuple of slices with start and stop, step 1)."""
        block = np.empty(tuple(r.stop - r.start for r in region), dtype=self.dtype)
        for offset, part in self.read_parts(region):
            block[tuple(slice(o, o + n) for o, n in zip(offset, part.shape, strict=True))] = part
        return block

    def read_parts(
        self, region: tuple[slice, ...]
    ) -> Iterator[tuple[tuple[int, ...], np.ndarray]]:
        """Each chunk's part of ``region``, with its offset inside the region, chunk by chunk."""
        for index in self.chunk_indices(region):
            offset, take = [], []
            for r, c in zip(region, self.chunk_region(index), strict=True):
                start, stop = max(r.start, c.start), min(r.stop, c.stop)
                offset.append(start - r.start)
                take.append(slice(start - c.start, stop - c.start))
            yield tuple(offset), self.read_chunk(index)[tuple(take)]

    def write(self, region: tuple[slice, ...], data: np.ndarray, write_empty: bool) -> None:
        """Write ``data`` to ``region``, which must cover whole chunks (or reach the edge)."""
        for index in self.chunk_indices(region):
            chunk_region = self.chunk_region(index)
            for r, c in zip(region, chunk_region, strict=True):
                if c.start < r.start or c.stop > r.stop:
                    raise ValueError(f"region {region} does not cover chunk {index} whole")
            part = data[
                tuple(
                    slice(c.start - r.start, c.stop - r.start)
                    for c, r in zip(chunk_region, region, strict=True)
                )
            ]
            self.write_chunk(index, part, write_empty)

    def write_chunk(self, index: tuple[int, ...], part: np.ndarray, write_empty: bool) -> None:
        """Encode and store one chunk, padding an edge chunk with the fill value."""
        if part.shape != self.chunks:
            chunk = np.full(self.chunks, self.fill_value, dtype=self.dtype)
            chunk[tuple(slice(0, n) for n in part.shape)] = part
        else:
            chunk = np.ascontiguousarray(part, dtype=self.dtype)
        if not write_empty and _all_fill(chunk, self.fill_value):
            return
        raw = chunk.view(np.uint8).reshape(-1)
        if self._codec is None:
            encoded: Any = raw
        else:
            # As zarr-python: v2 compressors get the typed chunk, v3 codecs its bytes.
            encoded = self._codec.encode(raw if self.bytes_input else chunk)
        write_chunk_file(self.chunk_path(index), encoded)


def write_chunk_file(path: str, data: Any) -> None:
    """Store one encoded chunk (its folder created as needed); the only write of this module."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)


def chunk_file_limit(chunk_bytes: int) -> int:
    """The largest file an honest chunk of ``chunk_bytes`` can be: no codec grows data much."""
    return int(1.25 * chunk_bytes) + 2**20


def check_chunk_file(path: str | os.PathLike[str], info: os.stat_result, limit: float) -> None:
    """Refuse a chunk file no honest chunk can be: not a regular file, or over ``limit``."""
    if not stat.S_ISREG(info.st_mode):
        raise PyramidError(f"{path} is not a regular file; restore the image's chunk files")
    if info.st_size > limit:
        raise PyramidError(
            f"{path} is {info.st_size} bytes, more than any chunk of this array can take "
            f"({limit}); the file is corrupt or crafted. Restore it."
        )


def _read_chunk_file(path: str, limit: int) -> bytes | None:
    """A chunk file's bytes, or None if missing; refuses what no honest chunk file is.

    Chunk files come from strangers: one linked to ``/dev/zero`` never ends, a FIFO blocks
    (hence O_NONBLOCK, and checks on the opened file, not on its name), and a sparse file of
    gigabytes costs no disk space but all of that memory to read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        check_chunk_file(path, os.fstat(fd), limit)
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read(limit + 1)
    finally:
        os.close(fd)


# Decompressors that stream with an output cap: a small crafted chunk must not inflate to
# gigabytes before its size is found wrong. blosc, zstd and lz4 check the size themselves
# against ``out`` before decoding.
_STREAMING = {
    "zlib": lambda: zlib.decompressobj(),
    "gzip": lambda: zlib.decompressobj(wbits=31),
    "bz2": lambda: bz2.BZ2Decompressor(),
    # A crafted header may ask for a dictionary of up to 4 GiB: cap the decoder's memory.
    "lzma": lambda: lzma.LZMADecompressor(memlimit=64 * 2**20),
}
_OUT_CHECKED = {"blosc", "zstd", "lz4"}


def _decode(codec: Any, config: dict[str, Any] | None, raw: bytes, out: np.ndarray) -> Any:
    """Decode ``raw`` into ``out`` (or return the bytes), never past ``out``'s size."""
    if codec is None:
        return raw
    name = config.get("id") if config else None
    if name in _STREAMING:
        decompressor = _STREAMING[name]()
        data = decompressor.decompress(raw, out.size + 1)
        if len(data) > out.size:
            raise ValueError(f"inflates past the chunk's {out.size} bytes")
        return data
    return codec.decode(raw, out=out)


def _same_memory(data: Any, out: np.ndarray) -> bool:
    try:
        return np.shares_memory(np.frombuffer(data, dtype=np.uint8), out)
    except (TypeError, ValueError):
        return False


def _all_fill(chunk: np.ndarray, fill_value: Any) -> bool:
    """zarr-python's test for an empty chunk: bitwise for a zero float fill, else equality."""
    flat = chunk.reshape(-1)
    if chunk.dtype.kind == "f" and fill_value == 0:
        bits = flat.view(f"u{chunk.dtype.itemsize}")
        return not bits[0] and not bits.any()
    return bool(flat[0] == fill_value) and bool(np.all(flat == fill_value))


def _reopen(path: str) -> ChunkArray:
    array = open_chunk_array(path)
    if array is None:  # pragma: no cover - the metadata changed under a running build
        raise ValueError(f"{path} no longer has a layout this engine reads directly")
    return array


def open_chunk_array(path: str | os.PathLike[str]) -> ChunkArray | None:
    """The array at ``path`` for direct chunk access, or None if its layout is not supported."""
    path = os.fspath(path)
    for zarr_format, name in ((2, ".zarray"), (3, "zarr.json")):
        if os.path.isfile(os.path.join(path, name)):
            try:
                with open(os.path.join(path, name), "rb") as f:
                    document = json.load(f)
            except (OSError, ValueError):
                return None
            return chunk_array_from_document(path, zarr_format, document)
    return None


def chunk_array_from_document(
    path: str | os.PathLike[str], zarr_format: int, document: Any
) -> ChunkArray | None:
    """The array at ``path`` described by its parsed metadata ``document``, or None if its
    layout is not supported."""
    try:
        build = _from_v2 if zarr_format == 2 else _from_v3
        return build(os.fspath(path), document)
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def _dtype_v2(text: Any) -> np.dtype | None:
    if not isinstance(text, str) or len(text) < 3 or text[0] not in "<|":
        return None
    dtype = np.dtype(text)
    if dtype.kind not in "iuf" or (dtype.itemsize > 1 and text[0] != "<"):
        return None
    return dtype


def _shape(values: Any) -> tuple[int, ...] | None:
    if not isinstance(values, list) or not values:
        return None
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values):
        return None
    return tuple(values)


def _from_v2(path: str, doc: dict[str, Any]) -> ChunkArray | None:
    dtype = _dtype_v2(doc.get("dtype"))
    shape, chunks = _shape(doc.get("shape")), _shape(doc.get("chunks"))
    fill = doc.get("fill_value")
    separator = doc.get("dimension_separator") or "."
    compressor = doc.get("compressor")
    if (
        doc.get("zarr_format") != 2
        or dtype is None
        or shape is None
        or chunks is None
        or len(shape) != len(chunks)
        or doc.get("order") != "C"
        or doc.get("filters") not in (None, [])
        or not finite_number(fill)
        or separator not in (".", "/")
        or (compressor is not None and not isinstance(compressor, dict))
    ):
        return None
    if compressor is not None:
        if compressor.get("id") not in _OUT_CHECKED | set(_STREAMING):
            return None  # a codec whose output we cannot cap: zarr-python reads it
        numcodecs.get_codec(dict(compressor))
    return ChunkArray(path, shape, chunks, dtype, dtype.type(fill), compressor, "", separator)


def _from_v3(path: str, doc: dict[str, Any]) -> ChunkArray | None:
    data_type = doc.get("data_type")
    shape = _shape(doc.get("shape"))
    grid = doc.get("chunk_grid") or {}
    chunks = _shape((grid.get("configuration") or {}).get("chunk_shape"))
    fill = doc.get("fill_value")
    if (
        doc.get("zarr_format") != 3
        or doc.get("node_type") != "array"
        or data_type not in _NUMERIC_V3
        or shape is None
        or chunks is None
        or len(shape) != len(chunks)
        or grid.get("name") != "regular"
        or doc.get("storage_transformers") not in (None, [])
        or not finite_number(fill)
    ):
        return None
    dtype = np.dtype(data_type).newbyteorder("<")
    keys = _v3_keys(doc.get("chunk_key_encoding"), len(shape))
    codec = _v3_codec(doc.get("codecs"), dtype)
    if keys is None or codec is False:
        return None
    prefix, separator = keys
    return ChunkArray(path, shape, chunks, dtype, dtype.type(fill), codec, prefix, separator, True)


def _v3_keys(encoding: Any, ndim: int) -> tuple[str, str] | None:
    """(prefix, separator) of the chunk keys."""
    if not isinstance(encoding, dict):
        return None
    name = encoding.get("name")
    separator = (encoding.get("configuration") or {}).get("separator")
    if name == "default":
        separator = separator or "/"
        return (f"c{separator}", separator) if separator in ("/", ".") else None
    if name == "v2":
        separator = separator or "."
        return ("", separator) if separator in ("/", ".") else None
    return None


def _v3_codec(codecs: Any, dtype: np.dtype) -> dict[str, Any] | bool | None:
    """The numcodecs configuration of a v3 codec chain; None: none; False: unsupported."""
    if not isinstance(codecs, list) or not codecs or not isinstance(codecs[0], dict):
        return False
    first = codecs[0]
    endian = (first.get("configuration") or {}).get("endian")
    if first.get("name") != "bytes" or (
        endian != "little" and not (endian is None and dtype.itemsize == 1)
    ):
        return False
    if len(codecs) == 1:
        return None
    if len(codecs) != 2 or not isinstance(codecs[1], dict):
        return False
    name, config = codecs[1].get("name"), codecs[1].get("configuration") or {}
    if name not in _V3_COMPRESSORS:
        return False
    if name == "zstd":
        return {
            "id": "zstd",
            "level": config["level"],
            "checksum": bool(config.get("checksum", False)),
        }
    if name == "gzip":
        return {"id": "gzip", "level": config["level"]}
    shuffle = _BLOSC_SHUFFLE.get(config.get("shuffle"))
    if shuffle is None:
        return False
    blosc = {
        "id": "blosc",
        "cname": config["cname"],
        "clevel": config["clevel"],
        "shuffle": shuffle,
        "blocksize": config.get("blocksize", 0),
    }
    if _BLOSC_TYPESIZE:
        blosc["typesize"] = config.get("typesize", dtype.itemsize)
    return blosc
