"""update_pyramid on a real S3 server: after another program edits level 0 the levels are
byte for byte a fresh build's, an unchanged image gets no write, and level 0 never does.

The bucket keeps versions, so any PUT of a key (even of the same bytes, which keeps its
ETag) shows as a new version: "nothing written" is checked against the server's history.
"""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from imaging import CHANGE_RECORD, write_image
from napari_pyramids import build_pyramid, update_pyramid
from s3kit import objects, read_object, upload

LOCK = ".napari-pyramids.lock"  # the lease an update takes: written by design
LAYOUTS = [
    pytest.param({"zarr_format": 2, "chunks": (1, 16, 16)}, id="v2"),
    pytest.param({"zarr_format": 3, "chunks": (1, 16, 16)}, id="v3"),
    pytest.param({"zarr_format": 3, "chunks": (1, 8, 8), "shards": (1, 16, 16)}, id="v3-sharded"),
]


def versioned_image(s3_server, bucket, tmp_path, data, layout, prefix="img.zarr") -> str:
    """``data`` as level 0 of an image in a versioned ``bucket``, built to 3 levels."""
    client = s3_server.client()
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    local = write_image(tmp_path / prefix, data, **layout)
    upload(client, local, bucket, prefix)
    url = f"s3://{bucket}/{prefix}"
    build_pyramid(zarrurl=url, num_levels=3)
    return url


def history(client, bucket: str, prefix: str) -> dict[str, list[tuple[str, str, str]]]:
    """Every version (and delete marker) of every key under ``prefix`` but the lock: id,
    ETag, modification time."""
    found: dict[str, list[tuple[str, str, str]]] = {}
    pages = client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix)
    for page in pages:
        for entry in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
            if entry["Key"].endswith(LOCK):
                continue
            found.setdefault(entry["Key"], []).append(
                (entry["VersionId"], entry.get("ETag", "delete"), str(entry["LastModified"]))
            )
    return {key: sorted(versions) for key, versions in found.items()}


def edit_level0(s3_server, url: str) -> np.ndarray:
    """Edit level 0 with zarr-python over s3fs, as another program would; its new values."""
    env = s3_server.env()
    store = zarr.storage.FsspecStore.from_url(
        f"{url}/0",
        storage_options={
            "key": env["AWS_ACCESS_KEY_ID"],
            "secret": env["AWS_SECRET_ACCESS_KEY"],
            "endpoint_url": env["AWS_ENDPOINT_URL"],
            "client_kwargs": {"region_name": env["AWS_REGION"]},
        },
    )
    level0 = zarr.open_array(store=store, mode="r+")
    level0[0, 5:30, 10:50] = 3
    level0[1, 60:64, 0:8] = 0  # the fill value: the chunk may be emptied (v3 drops it)
    return level0[...]


def levels_above_0(listing: dict[str, str]) -> dict[str, str]:
    return {key: digest for key, digest in listing.items() if key.split("/")[0] in ("1", "2")}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_update_after_an_edit_equals_a_fresh_build(tmp_path, s3_server, s3_env, bucket, layout):
    data = np.random.default_rng(3).integers(0, 500, size=(2, 64, 72), dtype=np.uint16)
    url = versioned_image(s3_server, bucket, tmp_path / "edited", data, layout)
    client = s3_server.client()
    edited = edit_level0(s3_server, url)
    level0_before = history(client, bucket, "img.zarr/0/")

    report = update_pyramid(zarrurl=url)

    assert report.status == "updated", report.describe()
    # The edited units only: of level 1's 2x2x3 and level 2's 2x1x2 (16 x 16 units).
    assert report.written == {1: 3, 2: 2}
    # Level 0 never written: not a single new version (or deletion) of any of its keys.
    assert history(client, bucket, "img.zarr/0/") == level0_before
    versioned_image(s3_server, bucket, tmp_path / "fresh", edited, layout, "fresh.zarr")
    got = objects(client, bucket, "img.zarr")
    want = objects(client, bucket, "fresh.zarr")
    assert read_object(client, bucket, f"img.zarr/1/{CHANGE_RECORD}") is not None
    # Every object of levels 1..n (chunks, shards, array metadata) byte for byte.
    assert levels_above_0(got) == levels_above_0(want)
    assert levels_above_0(got)
    assert not [key for key in got if ".napari-pyramids" in key]
    assert update_pyramid(zarrurl=url).status == "unchanged"


@pytest.mark.parametrize("layout", LAYOUTS[::2])
def test_unchanged_image_gets_no_write(tmp_path, s3_server, s3_env, bucket, layout):
    data = np.random.default_rng(4).integers(0, 500, size=(2, 64, 72), dtype=np.uint16)
    url = versioned_image(s3_server, bucket, tmp_path, data, layout)
    client = s3_server.client()
    before = history(client, bucket, "img.zarr/")
    assert f"img.zarr/1/{CHANGE_RECORD}" in before

    report = update_pyramid(zarrurl=url)

    assert report.status == "unchanged", report.describe()
    assert history(client, bucket, "img.zarr/") == before
