"""On a dask.distributed cluster each worker process writes its blocks straight to S3."""

from __future__ import annotations

import numpy as np
import pytest

from imaging import tree_snapshot, write_image
from napari_pyramids import build_pyramid
from napari_pyramids.pyramid import plan
from s3kit import files_of, objects, upload

distributed = pytest.importorskip("distributed")


def test_cluster_workers_write_to_s3_as_the_local_build(
    tmp_path, rng, s3_server, s3_env, bucket, monkeypatch
):
    monkeypatch.setattr(plan, "TARGET_BLOCK_BYTES", 16 * 1024)
    data = rng.integers(0, 4000, size=(3, 96, 80), dtype=np.uint16)
    local = write_image(tmp_path / "local" / "img.zarr", data, zarr_format=3, chunks=(1, 16, 16))
    upload(s3_server.client(), local, bucket, "img.zarr")
    build_pyramid(zarrurl=local, num_levels=4)

    # Worker processes know the server only through the environment they inherit.
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
        distributed.get_task_stream() as stream,
    ):
        built = build_pyramid(zarrurl=f"s3://{bucket}/img.zarr", num_levels=4)
        workers = set(client.scheduler_info()["workers"])

    ran = [t for t in stream.data if t["key"].startswith("run_block")]
    assert len(ran) == built.total_blocks > 2
    assert {t["worker"] for t in ran} <= workers
    assert objects(s3_server.client(), bucket) == files_of(tree_snapshot(local))
