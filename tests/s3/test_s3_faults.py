"""SIGKILL mid-build on S3 leaves an image a reader can use, and the same build completes it.

A build child kills itself right before its N-th write (every PUT and DELETE, the lease's
included; see ``s3kit.count_writes``), for N spread over the whole build, and the next build
is killed too at a random write (often while it removes what the first left); the suite
covers zarr v2 and v3, fresh levels and overwrite. After each kill an independent reader (boto3,
then zarr and ome-zarr-models on a downloaded copy) must find level 0 untouched and a
metadata document that is the original, the final one, or (overwrite) the one listing level
0 alone, every listed level complete and equal to numpy; then the same call run again must
leave exactly the objects a clean build leaves, lease and journal gone.

``NAPARI_PYRAMIDS_TRIALS`` >= 10 kills at every write instead of a spread.
"""

from __future__ import annotations

import numpy as np
import pytest

from faultkit import Expected, long_run, prepare, start
from napari_pyramids import build_pyramid
from napari_pyramids.errors import PyramidError
from s3kit import child_s3_build, download, files_of, objects, upload

CONFIGS = [
    pytest.param(2, False, id="v2"),
    pytest.param(2, True, id="v2-overwrite"),
    pytest.param(3, False, id="v3"),
    pytest.param(3, True, id="v3-overwrite"),
]


def _image(s3_server, pristine, tmp_path):
    bucket = s3_server.new_bucket()
    upload(s3_server.client(), pristine, bucket, "img.zarr")
    return bucket, f"s3://{bucket}/img.zarr"


def _reader_check(s3_server, bucket, expected: Expected, folder) -> str:
    copy = download(s3_server.client(), bucket, "img.zarr", folder / "img.zarr")
    return expected.at(copy).check()


def _spread(total: int) -> list[int]:
    if long_run():
        return list(range(1, total + 1))
    middle = {total // 4, total // 2, (3 * total) // 4}
    return sorted({1, 2, *middle, total - 2, total - 1, total} - {0})


@pytest.mark.parametrize(("zarr_format", "overwrite"), CONFIGS)
def test_kill_at_writes_then_same_build_completes(
    tmp_path, rng, s3_server, s3_env, zarr_format, overwrite
):
    data = rng.integers(1, 4096, size=(2, 40, 48), dtype=np.uint16)
    scenario = prepare(
        tmp_path,
        data,
        zarr_format=zarr_format,
        chunks=(1, 16, 16),
        overwrite=overwrite,
        num_levels=3,
        old_levels=4,  # overwrite drops level 3 and replaces 1 and 2
    )
    params = {**scenario.params, "workers": 1}  # one write at a time: the N-th is one write
    clean = files_of(scenario.after)

    bucket, url = _image(s3_server, scenario.pristine, tmp_path)
    child = start(child_s3_build, url, params, s3_env, None, None)
    end = child.finish()
    assert end[0] == "end", end
    total = end[2]
    assert objects(s3_server.client(), bucket) == clean

    states = []
    for step in _spread(total):
        bucket, url = _image(s3_server, scenario.pristine, tmp_path)
        child = start(child_s3_build, url, params, s3_env, step, None)
        child.process.join(120)
        assert child.process.exitcode == -9, f"write {step} of {total} was not reached"
        states.append(_reader_check(s3_server, bucket, scenario.expected, tmp_path / f"k{step}"))
        # Kill the next build too, anywhere in its recovery (or in its own build after it).
        again = start(child_s3_build, url, params, s3_env, int(rng.integers(1, total)), None)
        again.process.join(120)
        finished = _reader_check(s3_server, bucket, scenario.expected, tmp_path / f"r{step}")

        if finished == "final" and not overwrite:
            with pytest.raises(PyramidError, match="already exists"):
                build_pyramid(zarrurl=url, **params)
        else:
            build_pyramid(zarrurl=url, **params)
        assert objects(s3_server.client(), bucket) == clean, f"killed at write {step}"
    assert "original" in states
    assert "final" in states
    if overwrite:
        assert "intermediate" in states
