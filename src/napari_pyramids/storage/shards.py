"""Whole-shard reads and writes of sharded zarr v3 arrays, straight to numcodecs.

A shard (the ``sharding_indexed`` codec) is one stored object holding many inner chunks
and an index of where each one is. zarr-python decodes it through its Python codec
pipeline, one inner chunk at a time; the engine reads and writes whole shards instead: one
``store.get`` per shard, its index decoded with numpy, its inner chunks with the same
:class:`~.chunkio.ChunkCodec` that plain v3 chunks use, and one ``store.set`` per shard
written. Covered, and written exactly as zarr-python writes them (tests compare the bytes):

- an array whose only codec is ``sharding_indexed``, over the data types and fill values
  :mod:`.chunkio` handles;
- inner chunks encoded as :mod:`.chunkio` encodes v3 chunks (``bytes``, then at most one
  of ``blosc``, ``zstd``, ``gzip``), in Morton order, those equal to the fill value left
  out unless ``write_empty_chunks``; a shard left with none is deleted;
- an index of little-endian ``bytes``, with or without ``crc32c``, at the start or the end.

Anything else (nested shards, a transpose, codecs around the shard) is left to zarr-python.

Shards are untrusted input: a shard larger than any honest one, shorter than its index,
with a checksum that does not match, or an index pointing outside the shard is refused with
one PyramidError naming the shard, before any inner chunk is decoded; an inner chunk that
inflates past its size is refused as :mod:`.chunkio` refuses one.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import google_crc32c
import numpy as np

from ..errors import PyramidError
from ..ome.image import ArrayInfo
from .chunkio import (
    DECODE_ERRORS,
    ChunkArray,
    ChunkCodec,
    all_fill,
    chunk_file_limit,
    fill_value,
    read_unit,
    unreadable,
    v3_array_supported,
    v3_chunk_codec,
)
from .store import Store

# An inner chunk that is not stored: offset and length both all ones.
_MISSING = 2**64 - 1
Region = tuple[slice, ...]
_INDEX_BYTES = {"name": "bytes", "configuration": {"endian": "little"}}


@dataclass(frozen=True)
class ShardLayout:
    """How inner chunks sit in a shard, and how the shard's index is stored."""

    chunks_per_shard: tuple[int, ...]
    inner: tuple[int, ...]
    index_at_start: bool
    index_checksum: bool

    @property
    def count(self) -> int:
        return math.prod(self.chunks_per_shard)

    @property
    def index_size(self) -> int:
        return 16 * self.count + (4 if self.index_checksum else 0)

    @cached_property
    def morton_order(self) -> np.ndarray:
        """Inner chunk numbers (row-major) in the order zarr stores them: Morton (Z) order,
        a dimension leaving the interleaving once its bits run out."""
        bits = [(n - 1).bit_length() for n in self.chunks_per_shard]
        grid = np.indices(self.chunks_per_shard).reshape(len(bits), -1)
        code = np.zeros(grid.shape[1], dtype=np.uint64)
        out_bit = 0
        for bit in range(max(bits, default=0)):
            for dim, width in enumerate(bits):
                if bit < width:
                    code |= ((grid[dim] >> bit) & 1).astype(np.uint64) << np.uint64(out_bit)
                    out_bit += 1
        return np.argsort(code, kind="stable")

    def pieces(self, take: tuple[slice, ...]) -> list[tuple[int, Region, Region]]:
        """(row-major number, part of the inner chunk, where it goes in the part ``take``
        of a shard) of every inner chunk ``take`` touches."""
        if all(t.start == 0 and t.stop == n for t, n in zip(take, self.shard, strict=True)):
            return self.whole_shard_pieces
        return self._pieces(take)

    @cached_property
    def whole_shard_pieces(self) -> list[tuple[int, Region, Region]]:
        return self._pieces(tuple(slice(0, n) for n in self.shard))

    def _pieces(self, take: tuple[slice, ...]) -> list[tuple[int, Region, Region]]:
        ranges = [
            range(t.start // c, -(-t.stop // c)) for t, c in zip(take, self.inner, strict=True)
        ]
        out = []
        for coords in itertools.product(*ranges):
            source, target = [], []
            for i, c, t in zip(coords, self.inner, take, strict=True):
                start, stop = max(i * c, t.start), min((i + 1) * c, t.stop)
                source.append(slice(start - i * c, stop - i * c))
                target.append(slice(start - t.start, stop - t.start))
            number = int(np.ravel_multi_index(coords, self.chunks_per_shard))
            out.append((number, tuple(source), tuple(target)))
        return out

    @property
    def shard(self) -> tuple[int, ...]:
        return tuple(n * c for n, c in zip(self.chunks_per_shard, self.inner, strict=True))

    @cached_property
    def stored_order(self) -> list[tuple[int, tuple[slice, ...]]]:
        """(row-major number, region in the shard) of every inner chunk, in stored order."""
        return [
            (
                int(number),
                tuple(
                    slice(i * c, (i + 1) * c)
                    for i, c in zip(
                        np.unravel_index(number, self.chunks_per_shard), self.inner, strict=True
                    )
                ),
            )
            for number in self.morton_order
        ]


@dataclass(frozen=True)
class ShardArray(ChunkArray):
    """A sharded zarr v3 array read and written here, whole shards at a time.

    ``chunks`` and ``write_unit`` are the shard shape: a shard is read with one request
    whatever part of it is wanted, and written whole.
    """

    layout: ShardLayout

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reopen, (self.store, self.key, self.info))

    @property
    def chunks(self) -> tuple[int, ...]:
        return self.info.shards  # type: ignore[return-value]

    @property
    def write_unit(self) -> tuple[int, ...]:
        return self.info.shards  # type: ignore[return-value]

    @property
    def inner(self) -> tuple[int, ...]:
        return self.info.chunks

    def read_chunk(self, index: tuple[int, ...]) -> np.ndarray:
        """The whole decoded shard (edge shards include their padding)."""
        return self.read_part(index, tuple(slice(0, n) for n in self.chunks))

    def read_part(self, index: tuple[int, ...], take: tuple[slice, ...]) -> np.ndarray:
        """The part ``take`` (relative to the shard) of shard ``index``, decoding only the
        inner chunks it touches."""
        key = self.chunk_key(index)
        out = np.empty(tuple(s.stop - s.start for s in take), dtype=self.dtype)
        raw = read_unit(self.store, key, self.max_shard_bytes)
        if raw is None:
            out[...] = self.fill_value
            return out
        entries = self.shard_index(raw, key).tolist()
        data = memoryview(raw)
        scratch = np.empty(self.inner, dtype=self.dtype)
        for number, source, target in self.layout.pieces(take):
            offset, length = entries[number]
            if offset == _MISSING:
                out[target] = self.fill_value
                continue
            try:
                self.codec.decode_into(data[offset : offset + length], scratch)
            except DECODE_ERRORS as exc:
                coords = tuple(
                    int(i) for i in np.unravel_index(number, self.layout.chunks_per_shard)
                )
                where = f"{self.store.describe(key)}, inner chunk {coords}"
                raise unreadable(self.store, self.key, where, exc) from None
            out[target] = scratch[source]
        return out

    @property
    def max_shard_bytes(self) -> int:
        """The largest object an honest shard of this array can be."""
        unit_bytes = math.prod(self.chunks) * self.dtype.itemsize
        return chunk_file_limit(unit_bytes) + self.layout.index_size

    def shard_index(self, raw: bytes, key: str) -> np.ndarray:
        """The (offset, length) of each inner chunk, row-major, checked against the shard."""
        layout, size = self.layout, len(raw)
        if size < layout.index_size:
            raise self._corrupt(key, f"is {size} bytes, shorter than its index")
        start = 0 if layout.index_at_start else size - layout.index_size
        index = raw[start : start + layout.index_size]
        if layout.index_checksum:
            index, stored = index[:-4], int.from_bytes(index[-4:], "little")
            if google_crc32c.value(index) != stored:
                raise self._corrupt(key, "has an index whose crc32c checksum does not match")
        table = np.frombuffer(index, dtype="<u8").reshape(layout.count, 2)
        missing = table == np.uint64(_MISSING)
        if np.any(missing[:, 0] != missing[:, 1]):
            raise self._corrupt(key, "has an index entry with only an offset or a length")
        offsets, lengths = table[~missing[:, 0]].T
        if np.any(offsets > size) or np.any(lengths > size - offsets):
            raise self._corrupt(key, f"has an index pointing past its {size} bytes")
        return table

    def _corrupt(self, key: str, what: str) -> PyramidError:
        return PyramidError(
            f"{self.store.describe(self.key)}: the shard {self.store.describe(key)} {what}; "
            "the file is corrupt or crafted. Restore the image."
        )

    def write_chunk(self, index: tuple[int, ...], part: np.ndarray, write_empty: bool) -> None:
        """Encode and store one whole shard, padding an edge shard with the fill value."""
        key = self.chunk_key(index)
        if part.shape != self.chunks:
            shard = np.full(self.chunks, self.fill_value, dtype=self.dtype)
            shard[tuple(slice(0, n) for n in part.shape)] = part
        else:
            shard = np.ascontiguousarray(part, dtype=self.dtype)
        encoded = self.encode_shard(shard, part.shape, write_empty)
        if encoded is None:
            self.store.delete(key)
        else:
            self.store.set(key, encoded)

    def encode_shard(
        self, shard: np.ndarray, inside: tuple[int, ...], write_empty: bool
    ) -> bytes | None:
        """A whole shard's bytes as zarr-python lays them out; None if no chunk is kept.

        ``inside`` is the part of the shard within the array: as zarr-python, inner chunks
        wholly past the array's edge are never stored, even with ``write_empty``.
        """
        layout = self.layout
        if not write_empty and all_fill(shard, self.fill_value):
            return None
        table = np.full((layout.count, 2), _MISSING, dtype="<u8")
        pieces: list[Any] = []
        position = layout.index_size if layout.index_at_start else 0
        for number, region in layout.stored_order:
            if any(r.start >= n for r, n in zip(region, inside, strict=True)):
                continue
            chunk = np.ascontiguousarray(shard[region])
            if not write_empty and all_fill(chunk, self.fill_value):
                continue
            encoded = self.codec.encode(chunk)
            length = memoryview(encoded).nbytes
            table[number] = (position, length)
            position += length
            pieces.append(encoded)
        if not pieces:
            return None
        index = table.tobytes()
        if layout.index_checksum:
            index += google_crc32c.value(index).to_bytes(4, "little")
        return b"".join([index, *pieces] if layout.index_at_start else [*pieces, index])


def _reopen(store: Store, key: str, info: ArrayInfo) -> ShardArray:
    array = open_shard_array(store, key, info)
    if array is None:  # pragma: no cover - pickled only once opened
        raise ValueError(f"{key} no longer has a layout this engine reads directly")
    return array


def open_shard_array(store: Store, key: str, info: ArrayInfo) -> ShardArray | None:
    """The sharded array at ``key`` for whole-shard access, or None if not covered here."""
    found = _shard_codecs(info)
    if found is None:
        return None
    codec, layout = found
    return ShardArray(store, key, info, fill_value(info), codec, layout)


def supports(info: ArrayInfo) -> bool:
    """Whether this module reproduces the sharded layout of ``info`` exactly."""
    return _shard_codecs(info) is not None


def _shard_codecs(info: ArrayInfo) -> tuple[ChunkCodec, ShardLayout] | None:
    """The inner chunks' codec and the shard layout, or None if not covered here."""
    doc = info.document
    codecs = doc.get("codecs")
    if (
        info.zarr_format != 3
        or info.shards is None
        or not v3_array_supported(doc)
        or not isinstance(codecs, list)
        or len(codecs) != 1
        or not isinstance(codecs[0], dict)
        or codecs[0].get("name") != "sharding_indexed"
    ):
        return None
    config = codecs[0].get("configuration")
    if not isinstance(config, dict):
        return None
    location = config.get("index_location", "end")
    index_codecs = config.get("index_codecs")
    checksum = index_codecs == [_INDEX_BYTES, {"name": "crc32c"}] or index_codecs == [
        _INDEX_BYTES,
        {"name": "crc32c", "configuration": {}},
    ]
    if location not in ("start", "end") or not (checksum or index_codecs == [_INDEX_BYTES]):
        return None
    codec = v3_chunk_codec(config.get("codecs"), info.dtype)
    if codec is None:
        return None
    per_shard = tuple(s // c for s, c in zip(info.shards, info.chunks, strict=True))
    return codec, ShardLayout(per_shard, info.chunks, location == "start", checksum)
