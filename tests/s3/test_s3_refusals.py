"""What the storage refuses is one line, and nothing is written; untrusted metadata and
journals never steer a write or a delete outside the image's prefix (or onto what it lists)."""

from __future__ import annotations

import hashlib
import json
import time
import warnings

import numpy as np
import pytest

from imaging import write_image
from napari_pyramids import build_pyramid, lazy_pyramid
from napari_pyramids.errors import PyramidError
from s3kit import Keys, cli, objects, read_object, upload


@pytest.fixture
def image(tmp_path, rng, s3_server, bucket):
    """A v2 image with a pyramid of 2 levels at s3://bucket/plate/img.zarr, and neighbours."""
    data = rng.integers(0, 255, size=(2, 64, 64), dtype=np.uint8)
    local = write_image(tmp_path / "img.zarr", data, chunks=(1, 32, 32), axes="cyx")
    build_pyramid(zarrurl=local, num_levels=2)
    client = s3_server.client()
    upload(client, local, bucket, "plate/img.zarr")
    client.put_object(Bucket=bucket, Key="plate/other.zarr/0/.zarray", Body=b"{}")
    client.put_object(Bucket=bucket, Key="plate/img.zarr-old/keep", Body=b"x")
    return f"s3://{bucket}/plate/img.zarr"


def _one_line(done, *words):
    print(done.stderr)
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("keys", "words"),
    [
        pytest.param(Keys("AKIAWRONGWRONGWRONG1", "nope"), ["InvalidAccessKeyId"], id="key"),
        pytest.param(None, ["SignatureDoesNotMatch"], id="secret"),
    ],
)
def test_wrong_credentials_one_line_nothing_written(s3_server, bucket, image, keys, words):
    keys = keys or Keys(s3_server.admin.access_key_id, "wrong-secret")
    before = objects(s3_server.client(), bucket)

    done = cli(["build", image, "--levels", "3", "--overwrite"], s3_server.env(keys))

    _one_line(done, "refused the credentials", "AWS_ACCESS_KEY_ID", *words)
    assert objects(s3_server.client(), bucket) == before


def test_missing_bucket_one_line(s3_server):
    done = cli(["build", "s3://no-such-bucket-here/img.zarr"], s3_server.env())

    _one_line(done, "the bucket 'no-such-bucket-here' does not exist")
    assert "no-such-bucket-here" not in {
        b["Name"] for b in s3_server.client().list_buckets()["Buckets"]
    }


def test_no_permission_to_write_one_line_nothing_written(s3_server, bucket, image):
    before = objects(s3_server.client(), bucket)
    reader = s3_server.env(s3_server.reader)

    info = cli(["info", image], reader)
    done = cli(["build", image, "--levels", "3", "--overwrite"], reader)

    assert info.returncode == 0, info.stderr  # reading is allowed
    _one_line(done, "no permission to write", "AccessDenied")
    assert objects(s3_server.client(), bucket) == before


def test_unreachable_endpoint_one_line_in_seconds(tmp_path):
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "a",
        "AWS_SECRET_ACCESS_KEY": "b",
    }
    started = time.monotonic()
    done = cli(["info", "s3://bucket/img.zarr"], env)

    _one_line(done, "cannot be reached", "connection refused", "AWS_ENDPOINT_URL")
    assert time.monotonic() - started < 30


def test_https_images_read_and_preview_but_a_build_is_refused(http_image):
    data, url = http_image

    info = cli(["info", url], {})
    done = cli(["build", url, "--levels", "3"], {})
    levels = lazy_pyramid(zarrurl=url, num_levels=2)

    assert info.returncode == 0, info.stderr
    assert "level 0 '0': shape (2, 48, 48)" in info.stdout
    _one_line(done, "served over HTTP, which is read only", "Nothing was written")
    np.testing.assert_array_equal(levels[0].compute(), data)


# --------------------------------------------------------------------------- untrusted


def test_metadata_paths_outside_the_image_are_refused(s3_server, s3_env, bucket, image):
    client = s3_server.client()
    key = "plate/img.zarr/.zattrs"
    document = json.loads(read_object(client, bucket, key))
    document["multiscales"][0]["datasets"][1]["path"] = "../other.zarr/0"
    client.put_object(Bucket=bucket, Key=key, Body=json.dumps(document).encode())
    before = objects(client, bucket)

    with pytest.raises(PyramidError, match=r"path '\.\./other\.zarr/0' has an empty, '\.'"):
        build_pyramid(zarrurl=image, num_levels=3, overwrite=True)

    assert objects(client, bucket) == before


def _journal(record: dict) -> bytes:
    base = {
        "tool": "napari-pyramids", "build": "0123456789ab", "metadata_file": ".zattrs",
        "array_file": ".zarray", "original_sha256": None, "intermediate_sha256": None,
        "final_sha256": None, "levels": [], "aside": [], "created_files": [],
    }  # fmt: skip
    return json.dumps({**base, **record}).encode()


def _sha(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


JOURNAL = "plate/img.zarr/.napari-pyramids-build-0123456789ab.json"


@pytest.mark.parametrize(
    "record",
    [
        pytest.param({"levels": [["../other.zarr/0", "x"]]}, id="level-outside"),
        pytest.param({"aside": [["../img.zarr-old", None]]}, id="aside-outside"),
        pytest.param({"levels": [["/plate", "x"]]}, id="absolute"),
        pytest.param({"created_files": [["../other.zarr/.zgroup", "x"]]}, id="file-outside"),
        pytest.param({"created_files": [[".zattrs", "x"]]}, id="own-metadata"),
        pytest.param({"tool": "someone-else"}, id="not-ours"),
    ],
)
def test_a_forged_journal_is_left_alone(s3_server, s3_env, bucket, image, record):
    client = s3_server.client()
    record = {
        **record,
        "original_sha256": _sha(read_object(client, bucket, "plate/img.zarr/.zattrs")),
    }
    client.put_object(Bucket=bucket, Key=JOURNAL, Body=_journal(record))
    before = objects(client, bucket)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_pyramid(zarrurl=image, num_levels=3, overwrite=True)

    assert any("left alone" in str(w.message) for w in caught)
    after = objects(client, bucket)
    outside = {k: v for k, v in before.items() if not k.startswith("plate/img.zarr/")}
    assert {k: v for k, v in after.items() if not k.startswith("plate/img.zarr/")} == outside
    assert after[JOURNAL] == before[JOURNAL]


def test_a_journal_never_removes_listed_levels_nor_unrecorded_arrays(
    s3_server, s3_env, bucket, image
):
    client = s3_server.client()
    metadata = read_object(client, bucket, "plate/img.zarr/.zattrs")
    level1 = read_object(client, bucket, "plate/img.zarr/1/.zarray")
    # An array the journal names but whose metadata it did not write, and a labels group.
    client.put_object(Bucket=bucket, Key="plate/img.zarr/5/.zarray", Body=b'{"mine": 1}')
    client.put_object(Bucket=bucket, Key="plate/img.zarr/5/0.0", Body=b"data")
    client.put_object(Bucket=bucket, Key="plate/img.zarr/labels/.zgroup", Body=b"{}")
    record = {
        "original_sha256": _sha(metadata),
        "levels": [["0", _sha(b"x")], ["1", _sha(level1)], ["5", _sha(b"other")]],
        "aside": [["labels", None], ["0", None]],
    }
    client.put_object(Bucket=bucket, Key=JOURNAL, Body=_journal(record))
    before = objects(client, bucket)

    with pytest.raises(PyramidError, match="already exists"):
        build_pyramid(zarrurl=image, num_levels=2)

    after = objects(client, bucket)
    assert JOURNAL not in after  # handled: nothing in it was removable
    del before[JOURNAL]
    assert after == before


def test_consolidated_zarr_v2_image_is_refused_and_nothing_written(
    tmp_path, rng, s3_server, bucket
):
    """A zarr v2 image's ``.zmetadata`` is a second document that object builds do not keep
    in step: the build is refused in one line, before any object is written."""
    import zarr

    data = rng.integers(0, 255, size=(2, 64, 64), dtype=np.uint8)
    local = write_image(tmp_path / "img.zarr", data, chunks=(1, 32, 32), axes="cyx")
    zarr.consolidate_metadata(local)
    assert (local / ".zmetadata").is_file()
    client = s3_server.client()
    upload(client, local, bucket, "v2c/img.zarr")
    before = objects(client, bucket)

    done = cli(["build", f"s3://{bucket}/v2c/img.zarr", "--levels", "3"], s3_server.env())

    _one_line(done, "consolidated metadata of a zarr v2 image", "Nothing was written")
    assert objects(client, bucket) == before
