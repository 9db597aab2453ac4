"""Whole-chunk reads and writes straight to files and numcodecs, for the common array layouts.

zarr-python spends more time in its asyncio machinery and buffer copies than blosc spends
decoding (profiled on a 1 GiB uint16 image), so block tasks read and write plain chunk files
themselves when an array uses a layout this module reproduces exactly:

- zarr v2: C order, no filters, no compressor or one whose output can be capped at the
  chunk's size (blosc, zstd, lz4, zlib, gzip, bz2, lzma), little-endian (or
  single-byte) integer or float data, a finite numeric fill value;
- zarr v3: the ``bytes`` codec (little-endian) optionally followed by one of ``blosc``,
  ``zstd`` or ``gzip``, regular chunks, ``default`` or ``v2`` chunk keys, the same data
  types and fill values. Sharded arrays whose inner chunks are such chunks are read and
  written whole shards at a time by :mod:`.shards`, with the same :class:`ChunkCodec`.

Anything else (other codecs, big-endian, bool, NaN fill ...) returns None from
:func:`open_chunk_array` and the engine uses zarr-python. Chunks are written as zarr-python
writes them: edge chunks padded with the fill value, chunks equal to the fill value skipped
(and an existing one deleted) unless ``write_empty_chunks``; tests compare the files byte
for byte with zarr-python's.

Chunk files are untrusted input: a link to a device, a FIFO, a file larger than any chunk
can encode to, a chunk that does not decode, or one that inflates past its size is refused
with one PyramidError naming the file, without reading or allocating more than a chunk.
"""

from __future__ import annotations

import bz2
import itertools
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
from ..ome.image import ArrayInfo
from ..untrusted import finite_number
from .store import OversizedError, Store, join

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
class ChunkCodec:
    """How one chunk's bytes are encoded: a numcodecs configuration, or None for raw bytes.

    Shared by plain chunks and by the inner chunks of shards (:mod:`.shards`). Decoding never
    writes or allocates past the chunk's size, whatever the bytes claim.
    """

    config: dict[str, Any] | None
    bytes_input: bool = False  # v3 codecs take the chunk's bytes, v2 compressors the array
    _local: threading.local = field(default_factory=threading.local, compare=False, repr=False)

    @property
    def _codec(self) -> Any:
        codec = getattr(self._local, "codec", None)
        if codec is None and self.config is not None:
            codec = self._local.codec = numcodecs.get_codec(dict(self.config))
        return codec

    def decode_into(self, raw: bytes, out: np.ndarray) -> None:
        """Decode ``raw`` into the C-contiguous ``out``; ValueError (or a codec's own error)
        for bytes that are not one such chunk."""
        flat = out.view(np.uint8).reshape(-1)
        data = _decode(self._codec, self.config, raw, flat)
        if data is not None and not _same_memory(data, flat):
            decoded = np.frombuffer(data, dtype=np.uint8)
            if decoded.size != flat.size:
                raise ValueError(f"{decoded.size} bytes decoded for a {flat.size}-byte chunk")
            flat[...] = decoded

    def encode(self, chunk: np.ndarray) -> Any:
        """The stored bytes of the C-contiguous, whole ``chunk``."""
        raw = chunk.view(np.uint8).reshape(-1)
        if self._codec is None:
            return raw
        # As zarr-python: v2 compressors get the typed chunk, v3 codecs its bytes.
        return self._codec.encode(raw if self.bytes_input else chunk)


# What codecs raise on bytes they cannot decode.
DECODE_ERRORS = (ValueError, RuntimeError, TypeError, OSError, EOFError, zlib.error)


def unreadable(store: Store, array_key: str, where: str, exc: Exception) -> PyramidError:
    """One sentence for a chunk (or shard) of ``array_key`` that could not be decoded."""
    detail = " ".join(str(exc).split())[:160]
    return PyramidError(
        f"{store.describe(array_key)}: a chunk could not be read ({where}: "
        f"{type(exc).__name__}: {detail}); the file is corrupt or crafted. Restore the image."
    )


@dataclass(frozen=True)
class ChunkArray:
    """A zarr array whose chunks this module reads and writes directly through a store."""

    store: Store
    key: str
    info: ArrayInfo
    fill_value: Any
    codec: ChunkCodec

    def __reduce__(self) -> tuple[Any, ...]:
        # Sent to dask.distributed workers as its store, key and parsed metadata.
        return (_reopen, (self.store, self.key, self.info))

    @property
    def shape(self) -> tuple[int, ...]:
        return self.info.shape

    @property
    def chunks(self) -> tuple[int, ...]:
        return self.info.chunks

    @property
    def write_unit(self) -> tuple[int, ...]:
        return self.info.chunks

    @property
    def dtype(self) -> np.dtype:
        return self.info.dtype

    def chunk_key(self, index: tuple[int, ...]) -> str:
        return join(self.key, self.info.chunk_key(index))

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
        key = self.chunk_key(index)
        out = np.empty(self.chunks, dtype=self.dtype)
        raw = read_unit(self.store, key, chunk_file_limit(out.nbytes))
        if raw is None:
            out[...] = self.fill_value
            return out
        try:
            self.codec.decode_into(raw, out)
        except DECODE_ERRORS as exc:
            raise unreadable(self.store, self.key, self.store.describe(key), exc) from None
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
            yield tuple(offset), self.read_part(index, tuple(take))

    def read_part(self, index: tuple[int, ...], take: tuple[slice, ...]) -> np.ndarray:
        """The part ``take`` (relative to the chunk) of chunk ``index``."""
        return self.read_chunk(index)[take]

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
        if not write_empty and all_fill(chunk, self.fill_value):
            self.store.delete(self.chunk_key(index))
            return
        self.store.set(self.chunk_key(index), self.codec.encode(chunk))


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


def read_unit(store: Store, key: str, limit: int) -> bytes | None:
    """A chunk's (shard's) bytes, or None if missing; refuses what no honest one is.

    Chunk files come from strangers: the store refuses a link to ``/dev/zero`` or a FIFO,
    and a sparse file of gigabytes costs no disk space but all of that memory to read.
    """
    try:
        return store.get(key, limit)
    except OversizedError as exc:
        raise PyramidError(
            f"{exc.where} is {exc.size} bytes, more than any chunk of this array can take "
            f"({limit}); the file is corrupt or crafted. Restore it."
        ) from None


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


def all_fill(chunk: np.ndarray, fill_value: Any) -> bool:
    """zarr-python's test for an empty chunk: bitwise for a zero float fill, else equality."""
    flat = chunk.reshape(-1)
    if chunk.dtype.kind == "f" and fill_value == 0:
        bits = flat.view(f"u{chunk.dtype.itemsize}")
        return not bits[0] and not bits.any()
    return bool(flat[0] == fill_value) and bool(np.all(flat == fill_value))


def _reopen(store: Store, key: str, info: ArrayInfo) -> ChunkArray:
    array = open_chunk_array(store, key, info)
    if array is None:  # pragma: no cover - pickled only once opened
        raise ValueError(f"{key} no longer has a layout this engine reads directly")
    return array


def open_chunk_array(store: Store, key: str, info: ArrayInfo) -> ChunkArray | None:
    """The array at ``key`` for direct chunk access, or None if its layout is not supported."""
    codec = chunk_codec(info) if info.shards is None else None
    if codec is None:
        return None
    return ChunkArray(store, key, info, fill_value(info), codec)


def supports(info: ArrayInfo) -> bool:
    """Whether this module reproduces the layout of ``info`` exactly.

    ``info`` is the strictly parsed metadata (:func:`~napari_pyramids.ome.image.
    read_array_info`); what is left to decide is whether its codecs, order, byte order and
    fill value are ones handled here.
    """
    return info.shards is None and chunk_codec(info) is not None


def fill_value(info: ArrayInfo) -> Any:
    """The array's fill value as its dtype's scalar (only for arrays a codec was found for)."""
    return info.dtype.type(info.document["fill_value"])


def chunk_codec(info: ArrayInfo) -> ChunkCodec | None:
    """The codec of an unsharded array's chunks, or None if this module does not handle it."""
    if not finite_number(info.document.get("fill_value")):
        return None
    try:
        if info.zarr_format == 2:
            config = _v2_codec(info.document, info.dtype)
        elif not v3_array_supported(info.document):
            return None
        else:
            return v3_chunk_codec(info.document.get("codecs"), info.dtype)
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    return None if config is False else ChunkCodec(config)  # type: ignore[arg-type]


def v3_array_supported(doc: dict[str, Any]) -> bool:
    """Whether a v3 array's data type, fill value and transformers are ones handled here."""
    return (
        str(doc.get("data_type")) in _NUMERIC_V3
        and doc.get("storage_transformers") in (None, [])
        and finite_number(doc.get("fill_value"))
    )


def v3_chunk_codec(codecs: Any, dtype: np.dtype) -> ChunkCodec | None:
    """The codec of a v3 codec chain (an array's, or a shard's inner chunks'), or None if
    this module does not reproduce it: ``bytes`` (little-endian), then at most one of
    ``blosc``, ``zstd`` or ``gzip``."""
    try:
        config = _v3_codec(codecs, dtype)
        if config is False:
            return None
        if config is not None:
            numcodecs.get_codec(dict(config))  # type: ignore[arg-type]
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    return ChunkCodec(config, bytes_input=True)  # type: ignore[arg-type]


def _v2_codec(doc: dict[str, Any], dtype: np.dtype) -> dict[str, Any] | bool | None:
    """The numcodecs configuration of a v2 compressor; None: none; False: unsupported."""
    text = doc.get("dtype")
    compressor = doc.get("compressor")
    if (
        dtype.kind not in "iuf"
        or (dtype.itemsize > 1 and not str(text).startswith("<"))
        or doc.get("order") != "C"
        or doc.get("filters") not in (None, [])
        or (compressor is not None and not isinstance(compressor, dict))
    ):
        return False
    if compressor is None:
        return None
    if compressor.get("id") not in _OUT_CHECKED | set(_STREAMING):
        return False  # a codec whose output we cannot cap: zarr-python reads it
    numcodecs.get_codec(dict(compressor))
    return compressor


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
