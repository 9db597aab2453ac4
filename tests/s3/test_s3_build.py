"""Pyramids built in place on a real S3 server: values, layout, the doors that take URLs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

from faultkit import validate_ome
from imaging import reference_pyramid, write_image
from napari_pyramids import build_pyramid, lazy_pyramid
from napari_pyramids.info import describe_image
from napari_pyramids.storage import open_store
from s3kit import cli, download, files_of, objects, upload

# Every layout our tests can write: v2, v3, and v3 with shards (read and written through
# whatever array kind the storage layer uses for it).
LAYOUTS = [
    pytest.param({"zarr_format": 2, "chunks": (1, 32, 32)}, id="v2"),
    pytest.param({"zarr_format": 3, "chunks": (1, 32, 32)}, id="v3"),
    pytest.param(
        {"zarr_format": 3, "chunks": (1, 16, 16), "shards": (1, 32, 32)}, id="v3-sharded"
    ),
]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_levels_equal_numpy_and_local_build(tmp_path, rng, s3_server, s3_env, bucket, layout):
    data = rng.integers(0, 60000, size=(3, 70, 90), dtype=np.uint16)
    local = write_image(tmp_path / "local" / "img.zarr", data, **layout)
    client = s3_server.client()
    upload(client, local, bucket, "plate/img.zarr")
    # A sibling whose name starts like the image's must never be touched.
    client.put_object(Bucket=bucket, Key="plate/img.zarr1/keep", Body=b"mine")
    outside = {k: v for k, v in objects(client, bucket).items() if not k.startswith("plate/img.")}

    plan = build_pyramid(zarrurl=f"s3://{bucket}/plate/img.zarr", num_levels=3)
    build_pyramid(zarrurl=local, num_levels=3)

    assert [lv.path for lv in plan.levels] == ["0", "1", "2"]
    # Byte for byte what the same build writes on a disk: every chunk, every document.
    assert objects(client, bucket, "plate/img.zarr") == {
        name.removeprefix("img.zarr/"): digest for name, digest in files_of(_tree(local)).items()
    }
    copy = download(client, bucket, "plate/img.zarr", tmp_path / "copy" / "img.zarr")
    validate_ome(copy)
    reference = reference_pyramid(data, (1, 2, 2), 3, "mean")
    for k, want in enumerate(reference):
        np.testing.assert_array_equal(zarr.open_array(copy / str(k), mode="r")[...], want)
    after = objects(client, bucket)
    assert {k: v for k, v in after.items() if not k.startswith("plate/img.")} == outside
    assert after["plate/img.zarr1/keep"] == objects(client, bucket, "plate/img.zarr1")["keep"]


def _tree(root):
    from imaging import tree_snapshot

    return tree_snapshot(root)


def test_cli_builds_configured_only_by_aws_environment(tmp_path, rng, s3_server, bucket):
    data = rng.integers(0, 255, size=(2, 64, 64), dtype=np.uint8)
    local = write_image(tmp_path / "img.zarr", data, zarr_format=3, chunks=(1, 32, 32))
    upload(s3_server.client(), local, bucket, "img.zarr")
    url = f"s3://{bucket}/img.zarr"

    done = cli(["build", url, "--levels", "3", "--quiet"], s3_server.env())

    assert done.returncode == 0, done.stderr
    assert f"{url}: image, zarr v3 / NGFF 0.5" in done.stdout
    assert "level 2 '2': shape (2, 16, 16)" in done.stdout
    copy = download(s3_server.client(), bucket, "img.zarr", tmp_path / "copy")
    for k, want in enumerate(reference_pyramid(data, (1, 2, 2), 3, "mean")):
        np.testing.assert_array_equal(zarr.open_array(copy / str(k), mode="r")[...], want)
    listing = objects(s3_server.client(), bucket)
    assert not [k for k in listing if ".napari-pyramids" in k], "lock or journal left behind"


def test_storage_options_configure_a_url_without_environment(
    tmp_path, rng, s3_server, bucket, monkeypatch
):
    for name in list(__import__("os").environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    data = rng.integers(0, 255, size=(40, 40), dtype=np.uint8)
    local = write_image(tmp_path / "img.zarr", data, chunks=(16, 16))
    upload(s3_server.client(), local, bucket, "img.zarr")
    options = {
        "endpoint": s3_server.endpoint,
        "access_key_id": s3_server.admin.access_key_id,
        "secret_access_key": s3_server.admin.secret_access_key,
        "region": "us-east-1",
    }
    url = f"s3://{bucket}/img.zarr"

    build_pyramid(zarrurl=url, num_levels=2, storage_options=options)
    lazy = lazy_pyramid(zarrurl=url, num_levels=3, storage_options=options)

    want = reference_pyramid(data, (2, 2), 3, "mean")
    for level, expected in zip(lazy, want, strict=True):
        np.testing.assert_array_equal(level.compute(), expected)
    assert "level 1 '1'" in describe_image(url, options)


def test_preview_reads_level0_from_s3(tmp_path, rng, s3_server, s3_env, bucket):
    data = rng.integers(0, 255, size=(2, 48, 40), dtype=np.uint8)
    local = write_image(tmp_path / "img.zarr", data, zarr_format=3, chunks=(1, 8, 8),
                        shards=(1, 16, 16))  # fmt: skip
    upload(s3_server.client(), local, bucket, "img.zarr")

    levels = lazy_pyramid(zarrurl=f"s3://{bucket}/img.zarr", num_levels=3, method="max")

    for level, want in zip(levels, reference_pyramid(data, (1, 2, 2), 3, "max"), strict=True):
        np.testing.assert_array_equal(level.compute(), want)
    assert objects(s3_server.client(), bucket, "img.zarr") == objects(
        s3_server.client(), bucket, "img.zarr"
    )


def test_reader_layers_from_a_url(tmp_path, rng, s3_server, s3_env, bucket):
    from napari_pyramids._napari.layers import layer_data
    from napari_pyramids._napari.reader import get_reader

    data = rng.integers(0, 255, size=(2, 64, 64), dtype=np.uint8)
    local = write_image(tmp_path / "img.zarr", data, chunks=(1, 32, 32), axes="cyx")
    build_pyramid(zarrurl=local, num_levels=3)
    upload(s3_server.client(), local, bucket, "img.zarr")
    url = f"s3://{bucket}/img.zarr"

    reader = get_reader(url)
    assert reader is not None
    layers = reader(url)

    assert [kwargs["name"] for _, kwargs, _ in layers] == [
        kwargs["name"] for _, kwargs, _ in layer_data(url)
    ]
    assert len(layers) == 2
    pyramid, kwargs, kind = layers[1]
    assert kind == "image"
    assert kwargs["metadata"]["napari_pyramids_path"] == url
    for level, want in zip(pyramid, reference_pyramid(data, (1, 2, 2), 3, "mean"), strict=True):
        np.testing.assert_array_equal(level.compute(), want[1])  # the second channel
    assert get_reader(f"s3://{bucket}/not-there.zarr") is None


def test_overwrite_replaces_levels_and_drops_extra_ones(tmp_path, rng, s3_server, s3_env, bucket):
    data = rng.integers(0, 4000, size=(2, 64, 64), dtype=np.uint16)
    local = write_image(tmp_path / "img.zarr", data, zarr_format=2, chunks=(1, 16, 16))
    build_pyramid(zarrurl=local, num_levels=4, method="nearest")
    client = s3_server.client()
    upload(client, local, bucket, "img.zarr")
    url = f"s3://{bucket}/img.zarr"

    with pytest.raises(ValueError, match="already exists"):
        build_pyramid(zarrurl=url, num_levels=3)
    build_pyramid(zarrurl=url, num_levels=3, overwrite=True)

    keys = objects(client, bucket, "img.zarr")
    assert not [k for k in keys if k.startswith("3/")], "the dropped level 3 is left"
    document = json.loads(client.get_object(Bucket=bucket, Key="img.zarr/.zattrs")["Body"].read())
    assert [d["path"] for d in document["multiscales"][0]["datasets"]] == ["0", "1", "2"]
    copy = download(client, bucket, "img.zarr", tmp_path / "copy")
    for k, want in enumerate(reference_pyramid(data, (1, 2, 2), 3, "mean")):
        np.testing.assert_array_equal(zarr.open_array(copy / str(k), mode="r")[...], want)


def test_open_store_chooses_by_url(s3_env):
    from napari_pyramids.storage import LocalStore

    assert type(open_store("s3://bucket/a/b.zarr")).__name__ == "ObjectStore"
    assert open_store("s3://bucket/a/b.zarr/").describe("zarr.json") == (
        "s3://bucket/a/b.zarr/zarr.json"
    )
    assert isinstance(open_store("."), LocalStore)
    with pytest.raises(ValueError, match="scheme 'ftp' is not supported"):
        open_store("ftp://host/a.zarr")
    with pytest.raises(ValueError, match=r"'\.\.' component"):
        open_store("s3://bucket/a/../b.zarr")
    with pytest.raises(ValueError, match="apply to URLs"):
        open_store(".", {"region": "x"})


def test_object_store_builds_run_more_blocks_at_once_within_the_budget(
    tmp_path, rng, s3_server, s3_env, bucket
):
    from napari_pyramids import BuildOptions, plan_pyramid
    from napari_pyramids.images import open_image
    from napari_pyramids.system import cpu_count

    data = np.zeros((2, 1024, 1024), dtype=np.uint16)
    local = write_image(tmp_path / "img.zarr", data, chunks=(1, 1024, 1024))
    upload(s3_server.client(), local, bucket, "img.zarr")
    image = open_image(f"s3://{bucket}/img.zarr")

    roomy = plan_pyramid(image, BuildOptions(num_levels=3))
    tight = plan_pyramid(image, BuildOptions(num_levels=3, memory_budget="16MiB"))
    chosen = plan_pyramid(image, BuildOptions(num_levels=3, workers=1))

    assert roomy.workers == max(8, cpu_count())
    assert cpu_count() <= tight.workers < roomy.workers  # each block still fits its share
    assert chosen.workers == 1


def test_aws_profile_and_cli_storage_options(tmp_path, rng, s3_server, bucket):
    data = rng.integers(0, 255, size=(40, 40), dtype=np.uint8)
    local = write_image(tmp_path / "img.zarr", data, chunks=(16, 16))
    upload(s3_server.client(), local, bucket, "img.zarr")
    keys = s3_server.admin
    (tmp_path / "credentials").write_text(
        f"[lab]\naws_access_key_id = {keys.access_key_id}\n"
        f"aws_secret_access_key = {keys.secret_access_key}\n"
    )
    (tmp_path / "config").write_text("[profile lab]\nregion = us-east-1\n")
    profile = {
        "AWS_PROFILE": "lab",
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials"),
        "AWS_CONFIG_FILE": str(tmp_path / "config"),
    }
    url = f"s3://{bucket}/img.zarr"

    built = cli(["build", url, "--levels", "2", "--quiet"],
                {**profile, "AWS_ENDPOINT_URL": s3_server.endpoint})  # fmt: skip
    shown = cli(["info", url, "--storage-option", f"endpoint={s3_server.endpoint}",
                 "--storage-option", "allow_http=true"], profile)  # fmt: skip
    wrong = cli(["info", url, "--storage-option", "no_such_key=1"], profile)

    assert built.returncode == 0, built.stderr
    assert "level 1 '1': shape (20, 20)" in shown.stdout, shown.stderr
    assert wrong.returncode == 2
    assert "no_such_key" in wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1
