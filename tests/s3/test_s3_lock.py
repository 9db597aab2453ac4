"""One build of an S3 image at a time: a lease object written with conditional requests."""

from __future__ import annotations

import json
import os
import signal
import socket
import time

import numpy as np
import pytest
import zarr

from faultkit import start
from imaging import reference_pyramid, write_image
from napari_pyramids import build_pyramid
from napari_pyramids.errors import ImageBusyError
from s3kit import child_s3_build, download, objects, read_object, upload

LEASE = "img.zarr/.napari-pyramids.lock"


def _image(tmp_path, rng, s3_server, bucket):
    data = rng.integers(0, 4000, size=(2, 64, 64), dtype=np.uint16)
    local = write_image(tmp_path / "img.zarr", data, zarr_format=3, chunks=(1, 16, 16))
    upload(s3_server.client(), local, bucket, "img.zarr")
    return data, f"s3://{bucket}/img.zarr"


def _assert_pyramid(tmp_path, s3_server, bucket, data, levels):
    copy = download(s3_server.client(), bucket, "img.zarr", tmp_path / "copy")
    for k, want in enumerate(reference_pyramid(data, (1, 2, 2), levels, "mean")):
        np.testing.assert_array_equal(zarr.open_array(copy / str(k), mode="r")[...], want)
    assert not [k for k in objects(s3_server.client(), bucket) if ".napari-pyramids" in k]


def _lease(host: str, pid: int, expires: float) -> bytes:
    record = {"tool": "napari-pyramids", "build": "other", "pid": pid, "host": host,
              "since": "2026-01-01 00:00:00", "expires": expires}  # fmt: skip
    return json.dumps(record).encode()


def test_second_build_is_refused_while_the_first_runs(tmp_path, rng, s3_server, s3_env, bucket):
    data, url = _image(tmp_path, rng, s3_server, bucket)
    params = {"num_levels": 3, "workers": 1}
    first = start(child_s3_build, url, params, s3_env, None, 6)
    first.wait_for(("paused",))
    before = objects(s3_server.client(), bucket)

    busy = f"being built by another process \\(pid {first.process.pid} on"
    with pytest.raises(ImageBusyError, match=busy):
        build_pyramid(zarrurl=url, **params)

    assert objects(s3_server.client(), bucket) == before, "the refused build wrote something"
    first.conn.send("go")
    assert first.finish()[0] == "end"
    _assert_pyramid(tmp_path, s3_server, bucket, data, 3)


def test_an_expired_lease_is_taken_over(tmp_path, rng, s3_server, s3_env, bucket):
    data, url = _image(tmp_path, rng, s3_server, bucket)
    client = s3_server.client()
    client.put_object(Bucket=bucket, Key=LEASE, Body=_lease("elsewhere", 4242, time.time() - 1))

    build_pyramid(zarrurl=url, num_levels=3)

    _assert_pyramid(tmp_path, s3_server, bucket, data, 3)


def test_a_live_lease_of_another_host_refuses_and_nothing_is_written(
    tmp_path, rng, s3_server, s3_env, bucket
):
    _, url = _image(tmp_path, rng, s3_server, bucket)
    client = s3_server.client()
    held = _lease("elsewhere", 4242, time.time() + 60)
    client.put_object(Bucket=bucket, Key=LEASE, Body=held)
    before = objects(client, bucket)

    with pytest.raises(ImageBusyError, match="pid 4242 on elsewhere"):
        build_pyramid(zarrurl=url, num_levels=3)

    assert objects(client, bucket) == before
    assert read_object(client, bucket, LEASE) == held


def test_lease_of_a_killed_build_on_this_host_is_taken_over_at_once(
    tmp_path, rng, s3_server, s3_env, bucket
):
    data, url = _image(tmp_path, rng, s3_server, bucket)
    client = s3_server.client()
    # A build of this machine, killed: its lease has not expired, but its process is gone.
    held = _lease(socket.gethostname(), _dead_pid(), time.time() + 60)
    client.put_object(Bucket=bucket, Key=LEASE, Body=held)

    build_pyramid(zarrurl=url, num_levels=3)

    _assert_pyramid(tmp_path, s3_server, bucket, data, 3)


def _dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def test_a_stopped_build_past_its_lease_stops_writing(tmp_path, rng, s3_server, s3_env, bucket):
    data, url = _image(tmp_path, rng, s3_server, bucket)
    params = {"num_levels": 3, "workers": 1}
    env = {**s3_env, "NAPARI_PYRAMIDS_TEST_LEASE_SECONDS": "2"}
    first = start(child_s3_build, url, params, env, None, 8)
    first.wait_for(("paused",))
    os.kill(first.process.pid, signal.SIGSTOP)  # suspended: its lease is no longer renewed
    time.sleep(2.5)

    build_pyramid(zarrurl=url, **params)  # takes over, removes the first build's levels
    expected = objects(s3_server.client(), bucket)
    os.kill(first.process.pid, signal.SIGCONT)
    first.conn.send("go")
    end = first.finish()

    assert end[0] == "error"
    assert "not renewed in time" in end[2]
    # The one request the first build had sent before it stopped wrote the same bytes; after
    # it, nothing: no chunk, no journal, no undo of the image the second build published.
    assert objects(s3_server.client(), bucket) == expected
    _assert_pyramid(tmp_path, s3_server, bucket, data, 3)
