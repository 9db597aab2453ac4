"""Whole-shard reads and writes against zarr-python and tensorstore, and shards refused."""

from __future__ import annotations

import json
import os
import pickle
import tracemalloc

import numpy as np
import pytest
import tensorstore as ts
import zarr
from zarr.codecs import (
    BloscCodec,
    BytesCodec,
    Crc32cCodec,
    GzipCodec,
    ShardingCodec,
    TransposeCodec,
    ZstdCodec,
)

from imaging import reference_pyramid, write_image
from napari_pyramids import PyramidError, build_pyramid
from napari_pyramids.ome.image import read_array_info
from napari_pyramids.storage import LocalStore, arrays, open_level_array
from napari_pyramids.storage.shards import ShardArray, open_shard_array

# name: (shape, inner chunks, shards, dtype, inner compressor, index location, index crc32c)
LAYOUTS = {
    "2d-zstd-end-crc": ((37, 45), (4, 8), (8, 16), "uint16", ZstdCodec(level=3), "end", True),
    "3d-blosc-start-crc": (
        (5, 19, 23), (2, 4, 4), (4, 8, 12), "int32",
        BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"), "start", True,
    ),
    "3d-zstd-3x3-per-shard": (
        (2, 25, 20), (1, 4, 3), (1, 12, 9), "float64", ZstdCodec(level=1, checksum=True),
        "end", False,
    ),
    "4d-gzip-end-no-crc": (
        (2, 3, 17, 21), (1, 2, 4, 5), (2, 2, 8, 10), "float32", GzipCodec(level=5), "end", False,
    ),
    "5d-raw-start-no-crc": (
        (2, 2, 3, 9, 11), (1, 1, 2, 4, 4), (1, 2, 2, 8, 8), "uint8", None, "start", False,
    ),
    "2d-blosc-bitshuffle-u8-one-chunk-per-shard": (
        (30, 30), (16, 16), (16, 16), "uint8",
        BloscCodec(cname="zstd", clevel=2, shuffle="bitshuffle"), "end", True,
    ),
}  # fmt: skip


def create(path, layout, fill_value=0):
    shape, inner, shards, dtype, compressor, location, crc = LAYOUTS[layout]
    codec = ShardingCodec(
        chunk_shape=inner,
        codecs=[BytesCodec(), *([compressor] if compressor is not None else [])],
        index_codecs=[BytesCodec(), *([Crc32cCodec()] if crc else [])],
        index_location=location,
    )
    return zarr.create_array(
        str(path), shape=shape, chunks=shards, dtype=dtype, serializer=codec,
        compressors=None, filters=None, fill_value=fill_value, zarr_format=3,
    )  # fmt: skip


def sample(rng, shape, dtype):
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return (rng.standard_normal(shape) * 100).astype(dt)
    return rng.integers(0, min(np.iinfo(dt).max, 5000), size=shape, dtype=dt, endpoint=True)


def opened(path):
    store = LocalStore(path.parent)
    return open_level_array(store, path.name, read_array_info(store, path.name, 3))


def whole(shape):
    return tuple(slice(0, n) for n in shape)


def shard_files(path):
    return {
        str(f.relative_to(path)): f.read_bytes()
        for f in sorted((path / "c").rglob("*"))
        if f.is_file()
    }


def without_gzip_times(data, count, at_start, crc):
    """numcodecs' gzip stamps the current second into each inner chunk (bytes 4-7)."""
    size = 16 * count + (4 if crc else 0)
    start = 0 if at_start else len(data) - size
    table = np.frombuffer(data[start : start + 16 * count], "<u8").reshape(-1, 2)
    out = bytearray(data)
    for offset, _ in table:
        if offset != 2**64 - 1:
            out[int(offset) + 4 : int(offset) + 8] = bytes(4)
    return bytes(out)


def tensorstore_read(path):
    spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path)}}
    return ts.open(spec, read=True).result().read().result()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_reads_equal_numpy_including_edges_and_missing_shards(tmp_path, rng, layout):
    array = create(tmp_path / "a", layout, fill_value=7)
    data = sample(rng, array.shape, array.dtype)
    written = tuple(slice(0, max(1, n // 2)) for n in array.shape)
    array[written] = data[written]  # the rest stays unwritten: fill value
    expected = np.full(array.shape, 7, dtype=array.dtype)
    expected[written] = data[written]
    direct = opened(tmp_path / "a")
    assert isinstance(direct, ShardArray)
    np.testing.assert_array_equal(direct.read(whole(array.shape)), expected)
    region = tuple(slice(n // 3, n - 1) for n in array.shape)
    np.testing.assert_array_equal(direct.read(region), expected[region])


@pytest.mark.parametrize("write_empty", [False, True])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_written_shards_equal_zarr_python_byte_for_byte(tmp_path, rng, layout, write_empty):
    ours = create(tmp_path / "ours", layout)
    theirs = create(tmp_path / "theirs", layout)
    data = sample(rng, ours.shape, ours.dtype)
    inner, shards = ours.chunks, ours.shards
    data[tuple(slice(0, c) for c in inner)] = 0  # an inner chunk equal to the fill value
    data[(slice(None),) * (data.ndim - 2) + (slice(0, shards[-2]), slice(0, shards[-1]))] = 0
    theirs.with_config({"write_empty_chunks": write_empty})[...] = data
    opened(tmp_path / "ours").write(whole(ours.shape), data, write_empty)
    mine, zarrs = shard_files(tmp_path / "ours"), shard_files(tmp_path / "theirs")
    if LAYOUTS[layout][4].__class__ is GzipCodec:
        _, _, _, _, _, location, crc = LAYOUTS[layout]
        count = int(np.prod([s // c for s, c in zip(shards, inner, strict=True)]))
        mine = {k: without_gzip_times(v, count, location == "start", crc) for k, v in mine.items()}
        zarrs = {
            k: without_gzip_times(v, count, location == "start", crc) for k, v in zarrs.items()
        }
    assert mine.keys() == zarrs.keys()
    assert mine == zarrs
    np.testing.assert_array_equal(ours[...], data)
    np.testing.assert_array_equal(tensorstore_read(tmp_path / "ours"), data)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_written_shards_read_back_by_zarr_python_and_tensorstore(tmp_path, rng, layout):
    array = create(tmp_path / "a", layout, fill_value=3)
    data = sample(rng, array.shape, array.dtype)
    data[tuple(slice(0, c) for c in array.chunks)] = 3
    direct = opened(tmp_path / "a")
    # Shard by shard, edge shards (partial inner chunks) included.
    for index in direct.chunk_indices(whole(array.shape)):
        region = direct.chunk_region(index)
        direct.write(region, data[region], False)
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "a"), mode="r")[...], data)
    np.testing.assert_array_equal(tensorstore_read(tmp_path / "a"), data)
    np.testing.assert_array_equal(direct.read(whole(array.shape)), data)


def test_a_shard_emptied_is_deleted_like_zarr_python(tmp_path, rng):
    array = create(tmp_path / "a", "2d-zstd-end-crc")
    array[...] = sample(rng, array.shape, array.dtype)
    direct = opened(tmp_path / "a")
    direct.write((slice(0, 8), slice(0, 16)), np.zeros((8, 16), np.uint16), False)
    assert not (tmp_path / "a" / "c" / "0" / "0").exists()
    assert (tmp_path / "a" / "c" / "0" / "1").exists()
    assert np.all(array[:8, :16] == 0)


def test_region_must_cover_whole_shards(tmp_path):
    create(tmp_path / "a", "2d-zstd-end-crc")
    with pytest.raises(ValueError, match="whole"):
        opened(tmp_path / "a").write((slice(0, 8), slice(0, 8)), np.zeros((8, 8)), True)


def test_arrays_travel_to_other_processes_by_path(tmp_path):
    create(tmp_path / "a", "3d-blosc-start-crc")
    direct = opened(tmp_path / "a")
    assert pickle.loads(pickle.dumps(direct)) == direct


def _edit_codecs(path, edit):
    meta = json.loads((path / "zarr.json").read_text())
    edit(meta["codecs"])
    (path / "zarr.json").write_text(json.dumps(meta))


NOT_COVERED = {
    "nested-sharding": lambda tmp: zarr.create_array(
        str(tmp), shape=(16, 16), chunks=(16, 16), dtype="uint16", compressors=None,
        serializer=ShardingCodec(
            chunk_shape=(8, 8), codecs=[ShardingCodec(chunk_shape=(4, 4))]
        ),
    ),
    "transpose": lambda tmp: zarr.create_array(
        str(tmp), shape=(16, 16), chunks=(4, 4), shards=(8, 8), dtype="uint16",
        filters=[TransposeCodec(order=(1, 0))],
    ),
    "crc32c-on-inner-chunks": lambda tmp: zarr.create_array(
        str(tmp), shape=(16, 16), chunks=(4, 4), shards=(8, 8), dtype="uint16",
        compressors=[ZstdCodec(), Crc32cCodec()],
    ),
    "big-endian-inner-chunks": lambda tmp: zarr.create_array(
        str(tmp), shape=(16, 16), chunks=(4, 4), shards=(8, 8), dtype="uint16",
        serializer=BytesCodec(endian="big"),
    ),
    "nan-fill": lambda tmp: zarr.create_array(
        str(tmp), shape=(16, 16), chunks=(4, 4), shards=(8, 8), dtype="float32",
        fill_value=float("nan"),
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", NOT_COVERED)
def test_layouts_not_covered_fall_back_to_zarr_python(tmp_path, case):
    NOT_COVERED[case](tmp_path / "a")
    store = LocalStore(tmp_path)
    info = read_array_info(store, "a", 3)
    assert open_shard_array(store, "a", info) is None
    assert isinstance(open_level_array(store, "a", info), arrays.ZarrArray)
    assert not arrays.is_direct(info)


def test_a_codec_after_the_shard_falls_back_to_zarr_python(tmp_path):
    zarr.create_array(str(tmp_path / "a"), shape=(16, 16), chunks=(4, 4), shards=(8, 8),
                      dtype="uint16")  # fmt: skip
    _edit_codecs(tmp_path / "a", lambda codecs: codecs.append({"name": "crc32c"}))
    store = LocalStore(tmp_path)
    assert open_shard_array(store, "a", read_array_info(store, "a", 3)) is None


def _tampered(tmp_path, rng, layout, tamper):
    """A written array whose first shard ``tamper`` rewrites; the opened array and key."""
    array = create(tmp_path / "a", layout)
    array[...] = sample(rng, array.shape, array.dtype)
    shard = tmp_path / "a" / "c" / "0" / "0"
    shard.write_bytes(tamper(shard.read_bytes()))
    return opened(tmp_path / "a"), str(shard)


def _index_end(raw, crc=True, count=4):
    """The shard's bytes without its index, and the index table (end, crc32c layout)."""
    size = 16 * count + (4 if crc else 0)
    return raw[:-size], np.frombuffer(raw[-size:][: 16 * count], "<u8").reshape(-1, 2).copy()


def _with_index(body, table, crc=True):
    import google_crc32c

    index = table.astype("<u8").tobytes()
    return body + index + (google_crc32c.value(index).to_bytes(4, "little") if crc else b"")


def _out_of_range(raw):
    body, table = _index_end(raw)
    table[3] = (len(raw) - 10, 100)
    return _with_index(body, table)


def _overflowing(raw):
    body, table = _index_end(raw)
    table[1] = (5, 2**64 - 2)
    return _with_index(body, table)


def _half_missing(raw):
    body, table = _index_end(raw)
    table[2, 1] = 2**64 - 1
    return _with_index(body, table)


def _bad_crc(raw):
    return raw[:-1] + bytes([raw[-1] ^ 0xFF])


def _corrupt_chunk(raw):
    body, table = _index_end(raw)
    offset, length = (int(v) for v in table[0])
    garbled = body[:offset] + bytes(length) + body[offset + length :]
    return _with_index(garbled, table)


MALFORMED = {
    "truncated-below-the-index": (lambda raw: raw[:50], "shorter than its index"),
    "truncated-index-lost": (lambda raw: raw[:-20], "checksum does not match"),
    "index-out-of-range": (_out_of_range, "pointing past its"),
    "index-length-overflows": (_overflowing, "pointing past its"),
    "index-half-missing": (_half_missing, "only an offset or a length"),
    "bad-crc32c": (_bad_crc, "checksum does not match"),
    "inner-chunk-garbled": (_corrupt_chunk, r"inner chunk \(0, 0\): RuntimeError"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_shards_are_refused_in_one_line(tmp_path, rng, case):
    tamper, message = MALFORMED[case]
    direct, shard = _tampered(tmp_path, rng, "2d-zstd-end-crc", tamper)
    with pytest.raises(PyramidError, match=message) as info:
        direct.read((slice(0, 8), slice(0, 16)))
    text = str(info.value)
    assert "\n" not in text
    assert shard in text
    assert "corrupt or crafted" in text
    np.testing.assert_array_equal(  # the other shards still read
        direct.read((slice(8, 16), slice(16, 32))),
        zarr.open_array(str(tmp_path / "a"))[8:16, 16:32],
    )


def test_an_index_pointing_out_of_range_without_crc_is_refused(tmp_path, rng):
    def tamper(raw):
        body, table = _index_end(raw, crc=False)
        table[0, 0] = 10**9
        return _with_index(body, table, crc=False)

    array = zarr.create_array(
        str(tmp_path / "a"), shape=(16, 32), chunks=(8, 16), dtype="uint16",
        serializer=ShardingCodec(chunk_shape=(4, 8), index_codecs=[BytesCodec()]),
        compressors=None, filters=None,
    )  # fmt: skip
    array[...] = sample(rng, array.shape, array.dtype)
    shard = tmp_path / "a" / "c" / "0" / "0"
    shard.write_bytes(tamper(shard.read_bytes()))
    with pytest.raises(PyramidError, match="pointing past its"):
        opened(tmp_path / "a").read((slice(0, 8), slice(0, 16)))


def test_an_oversize_shard_is_refused_without_reading_it(tmp_path, rng):
    direct, shard = _tampered(tmp_path, rng, "2d-zstd-end-crc", lambda raw: raw)
    with open(shard, "r+b") as handle:
        handle.truncate(2**31)  # sparse: no disk space, but 2 GiB to read
    with pytest.raises(PyramidError, match="more than any chunk of this array can take"):
        direct.read((slice(0, 8), slice(0, 16)))


def test_an_inner_chunk_inflating_past_its_size_is_refused_without_inflating_it(tmp_path):
    import numcodecs

    array = create(tmp_path / "a", "2d-zstd-end-crc")
    array[...] = 1
    shard = tmp_path / "a" / "c" / "0" / "0"
    body, table = _index_end(shard.read_bytes())
    # 64 MiB of zeros in a few KiB, as inner chunk (0, 0) of 64 bytes.
    bomb = numcodecs.Zstd(level=1).encode(np.zeros(32 * 2**20, np.uint16))
    table[0] = (len(body), len(bomb))
    shard.write_bytes(_with_index(body + bomb, table))
    direct = opened(tmp_path / "a")
    tracemalloc.start()
    try:
        with pytest.raises(PyramidError, match=r"inner chunk \(0, 0\)"):
            direct.read((slice(0, 8), slice(0, 16)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20


@pytest.mark.parametrize(("edge", "method"), [("trim", "mean"), ("keep", "mode")])
def test_build_on_a_sharded_ngff_05_image_equals_numpy_and_zarr_python(
    tmp_path, rng, monkeypatch, edge, method
):
    data = rng.poisson(500, size=(2, 3, 75, 66)).astype(np.uint16)
    data[:, :, :16, :] = 0  # shards and inner chunks equal to the fill value
    paths = {
        name: write_image(
            tmp_path / f"{name}.zarr", data, zarr_format=3, chunks=(1, 1, 8, 8),
            shards=(1, 2, 16, 32), compressor="zstd",
        )
        for name in ("direct", "zarr")
    }  # fmt: skip
    build_pyramid(zarrurl=paths["direct"], num_levels=4, method=method, edge=edge, workers=2)
    monkeypatch.setattr(arrays, "open_shard_array", lambda *args: None)
    build_pyramid(zarrurl=paths["zarr"], num_levels=4, method=method, edge=edge, workers=2)
    expected = reference_pyramid(data, (1, 1, 2, 2), 4, method, edge)
    for k in range(1, 4):
        level = paths["direct"] / str(k)
        assert json.loads((level / "zarr.json").read_text())["codecs"][0]["name"] == (
            "sharding_indexed"
        )
        assert shard_files(level) == shard_files(paths["zarr"] / str(k))
        np.testing.assert_array_equal(zarr.open_array(str(level), mode="r")[...], expected[k])
        np.testing.assert_array_equal(tensorstore_read(level), expected[k])


def test_sharded_levels_are_read_and_written_directly(tmp_path, rng):
    data = rng.integers(0, 4000, size=(40, 52), dtype=np.uint16)
    path = write_image(tmp_path / "img.zarr", data, zarr_format=3, chunks=(4, 4), shards=(8, 8))
    store = LocalStore(path)
    info = read_array_info(store, "0", 3)
    assert isinstance(open_level_array(store, "0", info), ShardArray)
    assert arrays.is_direct(info)
    build_pyramid(zarrurl=path, num_levels=3)
    expected = reference_pyramid(data, (2, 2), 3, "mean")
    for k in (1, 2):
        assert isinstance(opened(path / str(k)), ShardArray)
        np.testing.assert_array_equal(tensorstore_read(path / str(k)), expected[k])


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_a_fifo_in_place_of_a_shard_is_refused_without_blocking(tmp_path, rng):
    array = create(tmp_path / "a", "2d-zstd-end-crc")
    array[...] = sample(rng, array.shape, array.dtype)
    shard = tmp_path / "a" / "c" / "0" / "0"
    shard.unlink()
    os.mkfifo(shard)
    with pytest.raises(PyramidError, match="not a regular file"):
        opened(tmp_path / "a").read((slice(0, 8), slice(0, 16)))
