"""Direct chunk reads and writes against zarr-python's, byte for byte, and the layouts refused."""

from __future__ import annotations

import hashlib
import tracemalloc

import numcodecs
import numpy as np
import pytest
import zarr
from numcodecs import Blosc as NumcodecsBlosc
from numcodecs import GZip, Zstd
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, GzipCodec, TransposeCodec, ZstdCodec

from imaging import CHANGE_RECORD, direct_array, reference_pyramid, write_image
from napari_pyramids import PyramidError, build_pyramid
from napari_pyramids.storage import arrays

SHAPE = (3, 37, 29)
CHUNKS = (2, 8, 10)

# (zarr_format, dtype, create_array keyword arguments) of every layout claimed as supported.
SUPPORTED = {
    "v2-blosc-lz4": (2, "uint16", {"compressors": NumcodecsBlosc("lz4", 5, 1)}),
    "v2-blosc-zstd-bitshuffle": (2, "int32", {"compressors": NumcodecsBlosc("zstd", 3, 2)}),
    "v2-zstd": (2, "float32", {"compressors": Zstd(level=1)}),
    "v2-gzip": (2, "int8", {"compressors": GZip(level=4)}),
    "v2-raw-dot-separator": (
        2,
        "float64",
        {"compressors": None, "chunk_key_encoding": {"name": "v2", "separator": "."}},
    ),
    "v3-zstd": (3, "uint16", {"compressors": ZstdCodec(level=3)}),
    "v3-zstd-checksum": (3, "uint64", {"compressors": ZstdCodec(level=2, checksum=True)}),
    "v3-blosc": (3, "uint16", {"compressors": BloscCodec(cname="lz4", clevel=5)}),
    "v3-blosc-bitshuffle-u1": (
        3,
        "uint8",
        {"compressors": BloscCodec(cname="zstd", clevel=2, shuffle="bitshuffle")},
    ),
    "v3-gzip": (3, "int16", {"compressors": GzipCodec(level=5)}),
    "v3-raw-dot-keys": (
        3,
        "float32",
        {"compressors": None, "chunk_key_encoding": {"name": "default", "separator": "."}},
    ),
    "v3-v2-keys": (
        3,
        "int64",
        {"compressors": None, "chunk_key_encoding": {"name": "v2", "separator": "/"}},
    ),
}


def create(path, layout, fill_value=0):
    zarr_format, dtype, kwargs = SUPPORTED[layout]
    kwargs = dict(kwargs)
    if zarr_format == 2 and "chunk_key_encoding" not in kwargs:
        kwargs["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
    return zarr.create_array(
        str(path),
        shape=SHAPE,
        chunks=CHUNKS,
        dtype=dtype,
        zarr_format=zarr_format,
        fill_value=fill_value,
        **kwargs,
    )


def sample(rng, dtype):
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return (rng.standard_normal(SHAPE) * 100).astype(dt)
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max, size=SHAPE, dtype=dt, endpoint=True)


def chunk_files(path):
    # The change record (inside level 1) stamps when it was made: not image content.
    names = (".zarray", ".zattrs", "zarr.json", CHANGE_RECORD)
    return {
        str(f.relative_to(path)): hashlib.sha256(without_gzip_time(f.read_bytes())).hexdigest()
        for f in sorted(path.rglob("*"))
        if f.is_file() and f.name not in names
    }


def without_gzip_time(data):
    """numcodecs' gzip stamps the current second into each header (bytes 4-7): not content."""
    if data[:2] == b"\x1f\x8b":
        return data[:4] + bytes(4) + data[8:]
    return data


def whole(array):
    return tuple(slice(0, n) for n in array.shape)


@pytest.mark.parametrize("layout", SUPPORTED)
def test_reads_equal_zarr_python_including_edges_and_missing_chunks(tmp_path, rng, layout):
    array = create(tmp_path / "a", layout, fill_value=7)
    data = sample(rng, array.dtype)
    array[:2, :20, :] = data[:2, :20, :]  # the rest stays unwritten: fill value
    direct = direct_array(tmp_path / "a")
    assert direct is not None
    np.testing.assert_array_equal(direct.read(whole(array)), array[...])
    region = (slice(1, 3), slice(5, 33), slice(3, 29))
    np.testing.assert_array_equal(direct.read(region), array[1:3, 5:33, 3:29])


@pytest.mark.parametrize("write_empty", [False, True])
@pytest.mark.parametrize("layout", SUPPORTED)
def test_written_chunk_files_equal_zarr_python_byte_for_byte(tmp_path, rng, layout, write_empty):
    ours = create(tmp_path / "ours", layout)
    theirs = create(tmp_path / "theirs", layout)
    data = sample(rng, ours.dtype)
    data[:, :16, :10] = 0  # whole chunks equal to the fill value
    theirs.with_config({"write_empty_chunks": write_empty})[...] = data
    direct = direct_array(tmp_path / "ours")
    direct.write(whole(ours), data, write_empty)
    assert chunk_files(tmp_path / "ours") == chunk_files(tmp_path / "theirs")
    np.testing.assert_array_equal(ours[...], data)


def test_negative_zero_float_chunks_are_kept_like_zarr_python(tmp_path):
    ours = create(tmp_path / "ours", "v2-zstd")
    theirs = create(tmp_path / "theirs", "v2-zstd")
    data = np.full(SHAPE, -0.0, dtype=np.float32)
    data[0, 0, 0] = 0.0
    theirs[...] = data
    direct_array(tmp_path / "ours").write(whole(ours), data, False)
    assert chunk_files(tmp_path / "ours") == chunk_files(tmp_path / "theirs")


def test_region_must_cover_whole_chunks(tmp_path):
    create(tmp_path / "a", "v3-zstd")
    direct = direct_array(tmp_path / "a")
    with pytest.raises(ValueError, match="whole"):
        direct.write((slice(0, 2), slice(0, 4), slice(0, 10)), np.zeros((2, 4, 10)), True)


REFUSED = {
    "sharded": dict(zarr_format=3, shards=(2, 16, 20)),
    "crc32c": dict(zarr_format=3, compressors=None, serializer=BytesCodec(), filters=None)
    | {"compressors": [ZstdCodec(), Crc32cCodec()]},
    "transpose": dict(zarr_format=3, filters=[TransposeCodec(order=(2, 1, 0))]),
    "big-endian-v3": dict(zarr_format=3, serializer=BytesCodec(endian="big")),
    "nan-fill": dict(zarr_format=3, dtype="float32", fill_value=float("nan")),
    "bool": dict(zarr_format=3, dtype="bool", fill_value=False),
    "big-endian-v2": dict(zarr_format=2, dtype=">u2"),
    "fortran-v2": dict(zarr_format=2, order="F"),
    "filters-v2": dict(zarr_format=2, filters=[Zstd(level=1)]),
}


@pytest.mark.parametrize("case", REFUSED)
def test_layouts_it_does_not_reproduce_fall_back_to_zarr_python(tmp_path, case):
    kwargs = {"dtype": "uint16", "fill_value": 0, **REFUSED[case]}
    zarr.create_array(str(tmp_path / "a"), shape=SHAPE, chunks=CHUNKS, **kwargs)
    assert direct_array(tmp_path / "a") is None


def test_arrays_travel_to_other_processes_by_path(tmp_path):
    import pickle

    create(tmp_path / "a", "v3-blosc")
    direct = direct_array(tmp_path / "a")
    again = pickle.loads(pickle.dumps(direct))
    assert again == direct


def build_levels(path, num_levels, **kwargs):
    build_pyramid(zarrurl=path, num_levels=num_levels, **kwargs)
    return {k: (path / str(k)) for k in range(1, num_levels)}


@pytest.mark.parametrize(
    ("zarr_format", "compressor", "edge", "method"),
    [
        (2, "blosc-lz4", "trim", "mean"),
        (2, "default", "keep", "median"),
        (3, "zstd", "keep", "mean"),
        (3, "default", "trim", "mode"),
    ],
)
def test_direct_build_equals_zarr_python_build_and_numpy(
    tmp_path, rng, monkeypatch, zarr_format, compressor, edge, method
):
    data = rng.poisson(500, size=(2, 3, 45, 38)).astype(np.uint16)
    data[:, :, :8, :] = 0  # chunks equal to the fill value in every level
    paths = {}
    for name in ("direct", "zarr"):
        paths[name] = write_image(
            tmp_path / f"{name}.zarr",
            data,
            zarr_format=zarr_format,
            chunks=(1, 2, 8, 6),
            compressor=compressor,
        )
    build_levels(paths["direct"], 4, method=method, edge=edge, workers=2)
    monkeypatch.setattr(arrays, "open_chunk_array", lambda *args: None)
    build_levels(paths["zarr"], 4, method=method, edge=edge, workers=2)
    expected = reference_pyramid(data, (1, 1, 2, 2), 4, method, edge)
    for k in range(1, 4):
        assert chunk_files(paths["direct"] / str(k)) == chunk_files(paths["zarr"] / str(k))
        stored = zarr.open_array(str(paths["direct"] / str(k)), mode="r")[...]
        np.testing.assert_array_equal(stored, expected[k])


def test_chunks_not_holding_whole_windows_are_reduced_as_one_block(tmp_path, rng):
    data = rng.integers(0, 4000, size=(27, 31), dtype=np.uint16)
    path = write_image(tmp_path / "img.zarr", data, zarr_format=3, chunks=(9, 7))
    build_pyramid(zarrurl=path, num_levels=3, coarsening_xy=2, edge="keep")
    expected = reference_pyramid(data, (2, 2), 3, "mean", "keep")
    for k in (1, 2):
        np.testing.assert_array_equal(zarr.open_array(str(path / str(k)))[...], expected[k])
    assert direct_array(path / "0") is not None


@pytest.mark.parametrize("direct", [True, False])
def test_write_empty_chunks_true_writes_every_chunk(tmp_path, monkeypatch, direct):
    data = np.zeros((32, 32), dtype=np.uint8)
    data[:8, :8] = 9
    path = write_image(tmp_path / "img.zarr", data, chunks=(4, 4))
    if not direct:
        monkeypatch.setattr(arrays, "open_chunk_array", lambda *args: None)
    build_pyramid(zarrurl=path, open_array_kwargs={"write_empty_chunks": True})
    files = [f for f in (path / "1").rglob("*") if f.is_file() and not f.name.startswith(".")]
    assert len(files) == 16
    np.testing.assert_array_equal(
        zarr.open_array(str(path / "1"))[...], reference_pyramid(data, (2, 2), 2, "mean")[1]
    )


@pytest.mark.parametrize(
    "compressor",
    [
        numcodecs.Blosc(cname="lz4"),
        numcodecs.Zstd(level=3),
        numcodecs.LZ4(),
        numcodecs.Zlib(level=9),
        numcodecs.GZip(level=9),
        numcodecs.BZ2(level=9),
        numcodecs.LZMA(),
    ],
    ids=lambda c: c.codec_id,
)
def test_a_chunk_inflating_past_its_size_is_refused_without_inflating_it(tmp_path, compressor):
    path = tmp_path / "a.zarr"
    array = zarr.create_array(
        str(path), shape=(64, 64), chunks=(32, 32), dtype="uint16", zarr_format=2,
        compressors=compressor, chunk_key_encoding={"name": "v2", "separator": "."},
    )  # fmt: skip
    array[...] = 1
    direct = direct_array(path)
    assert direct is not None
    # 64 MiB of zeros in a few KiB: the same codec, 32768 times the chunk's 2 KiB.
    (path / "0.0").write_bytes(compressor.encode(np.zeros(32 * 2**20, np.uint16)))
    tracemalloc.start()
    try:
        with pytest.raises(PyramidError, match=r"could not be read \(.*a\.zarr/0\.0: ValueError"):
            direct.read_chunk((0, 0))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20  # a chunk, the decoder's state (lzma: its dictionary), no bomb
    np.testing.assert_array_equal(direct.read_chunk((1, 1)), np.ones((32, 32), np.uint16))


def test_a_chunk_emptied_is_deleted_like_zarr_python(tmp_path, rng):
    ours = create(tmp_path / "ours", "v3-zstd")
    theirs = create(tmp_path / "theirs", "v3-zstd")
    data = sample(rng, "uint16")
    ours[...] = data
    theirs[...] = data
    data[:2, :8, :10] = 0  # chunk (0, 0, 0) now equals the fill value
    theirs[...] = data
    direct_array(tmp_path / "ours").write(whole(ours), data, False)
    assert not (tmp_path / "ours" / "c" / "0" / "0" / "0").exists()
    assert chunk_files(tmp_path / "ours") == chunk_files(tmp_path / "theirs")
