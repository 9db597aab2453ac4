"""Reading stored arrays through zarr-python, with the checks untrusted chunk files need.

The engine reads and writes chunks and shards itself (:mod:`.chunkio`, :mod:`.shards`) for
the common layouts; this module serves the others (exotic codecs, nested shards) and the
lazy preview. It imports
zarr, so it is imported only where it is used.
"""

from __future__ import annotations

import itertools
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.storage import LocalStore, ObjectStore

from ..errors import PyramidError
from ..untrusted import MAX_ARRAY_JSON_BYTES, ZARR_METADATA_NAMES
from .chunkio import check_chunk_file, chunk_file_limit
from .store import Store


class CheckedLocalStore(LocalStore):
    """A LocalStore that refuses to read files no honest chunk (or metadata) could be.

    Chunk files come from strangers too: one linked to ``/dev/zero`` never ends, a FIFO
    blocks, and a sparse file of 2 GiB takes no disk space but 2 GiB of memory to read for a
    512-byte chunk. Files are checked (``stat``, following links: reading through links is
    allowed) before zarr reads them.
    """

    def __init__(
        self, root: Path | str, *, read_only: bool = True, max_file_bytes: int | None = None
    ) -> None:
        super().__init__(root, read_only=read_only)
        self.max_file_bytes = max_file_bytes

    def _check(self, key: str) -> None:
        path = Path(self.root) / key
        try:
            info = os.stat(path)
        except OSError:
            return  # a missing chunk reads as the fill value
        metadata = key.rsplit("/", 1)[-1] in ZARR_METADATA_NAMES
        limit = MAX_ARRAY_JSON_BYTES if metadata else self.max_file_bytes
        check_chunk_file(path, info, math.inf if limit is None else limit)

    async def get(self, key: str, prototype: Any = None, byte_range: Any = None) -> Any:
        self._check(key)
        return await super().get(key, prototype, byte_range)

    async def get_partial_values(self, prototype: Any, key_ranges: Any) -> Any:
        key_ranges = list(key_ranges)
        for key, _ in key_ranges:
            self._check(key)
        return await super().get_partial_values(prototype, key_ranges)


class CheckedObjectStore(ObjectStore):
    """zarr-python's store over obstore, refusing objects no honest chunk could be.

    The size of an object is in the response headers, known before its body is fetched:
    an oversized one is refused without being downloaded. There are no links, devices or
    FIFOs in an object store, so nothing needs checking before a read (``_check``).
    """

    def __init__(
        self, client: Any, *, read_only: bool, max_file_bytes: int | None, root: str
    ) -> None:
        super().__init__(client, read_only=read_only)
        self.max_file_bytes = max_file_bytes
        self.root = root

    def _check(self, key: str) -> None:
        return None

    def with_read_only(self, read_only: bool = False) -> CheckedObjectStore:
        return CheckedObjectStore(
            self.store, read_only=read_only, max_file_bytes=self.max_file_bytes, root=self.root
        )

    async def get(self, key: str, prototype: Any = None, byte_range: Any = None) -> Any:
        if byte_range is not None:
            return await super().get(key, prototype, byte_range)
        import obstore

        metadata = key.rsplit("/", 1)[-1] in ZARR_METADATA_NAMES
        limit = MAX_ARRAY_JSON_BYTES if metadata else self.max_file_bytes
        try:
            response = await obstore.get_async(self.store, key)
        except FileNotFoundError:
            return None
        size = response.meta["size"]
        if limit is not None and size > limit:
            raise PyramidError(
                f"{self.root}/{key} is {size} bytes, more than any chunk of this array can "
                f"take ({limit}); the object is corrupt or crafted. Restore it."
            )
        return prototype.buffer.from_bytes(await response.bytes_async())


class CheckedArray:
    """A stored array, read-only, whose reads check chunk files first and fail in one line.

    Files of the region are checked before zarr starts reading them (a refusal raised inside
    zarr's concurrent reads leaves its other reads pending, and asyncio complains at exit);
    anything zarr then fails on, such as a truncated chunk a codec cannot decode, becomes a
    PyramidError naming the array instead of a codec's traceback.
    """

    def __init__(self, array: zarr.Array, store: CheckedLocalStore | CheckedObjectStore) -> None:
        self._array = array
        self._store = store
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim
        self.chunks, self.shards = array.chunks, array.shards

    def __getitem__(self, region: Any) -> np.ndarray:
        unit = self.shards or self.chunks
        ranges = []
        for index, n, u in zip(np.index_exp[region], self.shape, unit, strict=False):
            start, stop, _ = (
                index.indices(n) if isinstance(index, slice) else (index, index + 1, 1)
            )
            ranges.append(range(start // u, -(-stop // u)) if stop > start else range(0))
        for coords in itertools.product(*ranges):
            self._store._check(self._array.metadata.encode_chunk_key(coords))
        try:
            return self._array[region]
        except (PyramidError, MemoryError):
            raise
        except Exception as exc:  # codecs raise anything on corrupt data
            detail = " ".join(str(exc).split())[:160]
            raise PyramidError(
                f"{self._store.root}: a chunk could not be read ({type(exc).__name__}: "
                f"{detail}); the file is corrupt or crafted. Restore the image."
            ) from None


def open_array_checked(store: Store, key: str) -> CheckedArray:
    """Open a stored array read-only, refusing chunk files bigger than its chunks can be.

    The cap is the uncompressed size of one chunk (one shard, with its index) plus a quarter
    and 1 MiB: no codec zarr ships expands data by more than a few per cent.
    """
    # Metadata files have their own cap, so the store can read them before the chunk cap
    # is known.
    checked = store.zarr_store(key, read_only=True)
    array = zarr.open_array(store=checked, mode="r")
    unit = array.shards or array.chunks
    index = 16 * math.prod(u // c for u, c in zip(unit, array.chunks, strict=True)) + 4
    checked.max_file_bytes = chunk_file_limit(math.prod(unit) * array.dtype.itemsize) + index
    return CheckedArray(array, checked)
