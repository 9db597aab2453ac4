"""The same block tasks on a dask.distributed cluster of processes, byte for byte."""

from __future__ import annotations

import shutil
import socket

import numpy as np
import pytest

from imaging import file_hashes, write_image
from napari_pyramids import build_pyramid, engine
from napari_pyramids.pyramid import plan

distributed = pytest.importorskip("distributed")


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_build_on_a_process_cluster_equals_the_threaded_build(
    tmp_path, rng, zarr_format, monkeypatch
):
    monkeypatch.setattr(plan, "TARGET_BLOCK_BYTES", 16 * 1024)
    data = rng.integers(0, 4000, size=(3, 96, 80), dtype=np.uint16)
    threaded = write_image(
        tmp_path / "threads.zarr", data, zarr_format=zarr_format, chunks=(1, 16, 16)
    )
    clustered = tmp_path / "cluster.zarr"
    shutil.copytree(threaded, clustered)

    built = build_pyramid(zarrurl=threaded, num_levels=4, workers=2)
    assert built.total_blocks > 2
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
        distributed.get_task_stream() as stream,
    ):
        build_pyramid(zarrurl=clustered, num_levels=4)
        workers = set(client.scheduler_info()["workers"])
    # Every block ran as a task on the cluster's worker processes.
    ran = [t for t in stream.data if t["key"].startswith("run_block")]
    assert len(ran) == built.total_blocks
    assert {t["worker"] for t in ran} <= workers
    assert file_hashes(clustered) == file_hashes(threaded)


def test_cli_scheduler_address_runs_the_blocks_on_that_cluster(tmp_path, rng, monkeypatch, capsys):
    from napari_pyramids.cli import main

    monkeypatch.setattr(plan, "TARGET_BLOCK_BYTES", 16 * 1024)
    data = rng.integers(0, 4000, size=(2, 64, 64), dtype=np.uint16)
    path = write_image(tmp_path / "img.zarr", data, chunks=(1, 16, 16))
    reference = tmp_path / "reference.zarr"
    shutil.copytree(path, reference)
    build_pyramid(zarrurl=reference, num_levels=3)
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster.scheduler_address, set_as_default=False) as observer,
        distributed.get_task_stream(client=observer) as stream,
    ):
        # The observer is not this process's default client: only --scheduler reaches it.
        assert engine.active_client() is None
        address = cluster.scheduler_address
        assert main(["build", str(path), "--levels", "3", "--scheduler", address]) == 0
    assert [t for t in stream.data if t["key"].startswith("run_block")]
    assert file_hashes(path) == file_hashes(reference)


def test_an_unreachable_scheduler_is_one_line_and_nothing_written(
    tmp_path, rng, capsys, monkeypatch
):
    from imaging import tree_snapshot
    from napari_pyramids.cli import main

    path = write_image(tmp_path / "img.zarr", rng.integers(0, 9, size=(64, 64), dtype=np.uint8))
    before = tree_snapshot(path)
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    engine.SCHEDULER_TIMEOUT = "2s"
    try:
        status = main(
            ["build", str(path), "--levels", "2", "--scheduler", f"tcp://127.0.0.1:{port}"]
        )
    finally:
        engine.SCHEDULER_TIMEOUT = "10s"
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1
    assert "cannot reach a dask scheduler" in err
    assert tree_snapshot(path) == before


def test_cli_builds_a_whole_plate_on_the_cluster(tmp_path, rng, capsys):
    from imaging import reference_pyramid
    from napari_pyramids.cli import main
    from plates import ome_zarr_plate, read_level

    root = tmp_path / "plate.zarr"
    data = ome_zarr_plate(root, "0.5", rng)
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster.scheduler_address, set_as_default=False) as observer,
        distributed.get_task_stream(client=observer) as stream,
    ):
        address = cluster.scheduler_address
        assert main(["build", str(root), "--levels", "2", "--quiet", "--scheduler", address]) == 0
    # Every image's blocks (the label image's too) ran on the cluster.
    assert len([t for t in stream.data if t["key"].startswith("run_block")]) >= len(data)
    assert capsys.readouterr().out.splitlines()[-1] == "5 images: 5 built"
    for name, level0 in data.items():
        label = "/labels/" in name
        factors, method = ((2, 2), "mode") if label else ((1, 2, 2), "mean")
        expected = reference_pyramid(level0, factors, 2, method)[1]
        np.testing.assert_array_equal(read_level(root / name, 1), expected)
