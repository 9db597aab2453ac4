"""Images of a dataset built in worker processes: the same results as threads, progress and
cancel across processes, and a killed worker or parent leaves every image whole or as it was."""

from __future__ import annotations

import os
import threading

import numpy as np
import psutil
import pytest

import faultkit
from napari_pyramids import PyramidError, build_dataset
from napari_pyramids.dataset_build import BUILT, CANCELLED, FAILED, processes_for
from napari_pyramids.options import BuildOptions
from plates import assert_built, listed_levels, ome_zarr_plate, validate_image, validate_plate

WELLS = ("A/1", "A/2", "B/1", "B/2")


def workers_of(pid: int) -> list[psutil.Process]:
    """The worker processes a build process has started."""
    return [
        p
        for p in psutil.Process(pid).children(recursive=True)
        if any("dataset_processes" in part for part in p.cmdline())
    ]


def whole_or_untouched(root, data, levels):
    """Every image lists level 0 alone or all its levels, and holds no build folder."""
    for name in data:
        listed = len(listed_levels(root / name))
        assert listed in (1, levels), name
        assert not [n for n in os.listdir(root / name) if n.startswith(".napari-pyramids-b")]


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_a_plate_built_by_worker_processes_equals_numpy(tmp_path, rng, version):
    root = tmp_path / "plate.zarr"
    data = ome_zarr_plate(root, version, rng, wells=WELLS, label_fields=("A/2/1",))
    seen = []
    used = set()

    def progress(step):
        seen.append(step)
        used.update(p.pid for p in workers_of(os.getpid()))

    report = build_dataset(root, num_levels=3, processes=2, progress=progress)
    assert report.ok, report.table()
    assert {r.status for r in report.results} == {BUILT}
    assert len(used) == 2
    assert workers_of(os.getpid()) == []  # none outlives the build
    assert seen[-1].images_done == seen[-1].images_total == len(data)
    assert seen[-1].blocks_done == seen[-1].blocks_total > 0
    assert_built(root, data, 3)
    validate_plate(root)
    for name in data:
        validate_image(root / name)


def test_processes_are_chosen_for_many_images_and_refused_when_they_cannot_work():
    options = BuildOptions(workers=2)
    assert processes_for(384, options, None) == 2
    assert processes_for(8, options, None) == 1  # a worker's start would not pay
    assert processes_for(384, BuildOptions(workers=1), None) == 1
    assert processes_for(384, BuildOptions(workers=2, memory_budget="32MiB"), None) == 1
    assert processes_for(3, options, 8) == 3
    custom = BuildOptions(workers=2, aggregation_function=np.mean)
    assert processes_for(384, custom, None) == 1
    with pytest.raises(PyramidError, match=r"processes=1 \(CLI: --processes 1\)"):
        processes_for(384, custom, 2)
    with pytest.raises(PyramidError, match="processes must be an integer >= 1, got 0"):
        processes_for(384, options, 0)


def test_cancel_reaches_the_worker_processes(tmp_path, rng):
    root = tmp_path / "plate.zarr"
    wells = (*WELLS, "C/1", "C/2")
    data = ome_zarr_plate(root, "0.4", rng, wells=wells, label_fields=())
    stop = threading.Event()

    def progress(step):
        if step.images_done >= 2:
            stop.set()

    report = build_dataset(
        root, num_levels=2, processes=2, images_at_once=2, progress=progress, cancel=stop
    )
    assert report.cancelled
    statuses = [r.status for r in report.results]
    assert statuses.count(BUILT) >= 2
    assert CANCELLED in statuses
    whole_or_untouched(root, data, 2)
    for result in report.results:
        assert len(listed_levels(result.path)) == (2 if result.status == BUILT else 1)
    assert build_dataset(root, num_levels=2, processes=2).ok
    assert_built(root, data, 2)


def test_a_killed_worker_fails_its_image_alone_and_the_rerun_finishes(tmp_path, rng):
    from napari_pyramids.dataset_build import _DatasetRun
    from napari_pyramids.dataset_processes import WorkerProcesses
    from napari_pyramids.datasets import find_images

    root = tmp_path / "plate.zarr"
    data = ome_zarr_plate(root, "0.4", rng, wells=("A/1",), label_fields=())
    run = _DatasetRun(find_images(root), BuildOptions(num_levels=3), False, 2, None, None, 2)
    first, second = (run._job(entry) for entry in run.dataset.images)
    with WorkerProcesses(2, 2, 2, lambda *step: None) as workers:
        lost = workers.submit(first)
        victim = workers.workers[0].process
        # Killed while it is still starting: it cannot have built the image.
        victim.kill()
        victim.wait(30)
        result = lost.result(60)
        assert result.status == FAILED
        assert result.message.startswith("the worker process building it ")
        assert result.message.endswith("; building again finishes it")
        # The other worker takes the next image and builds it.
        other = workers.submit(second).result(120)
        assert other.status == BUILT, other.message
    assert len(listed_levels(root / first.name)) == 1
    assert len(listed_levels(root / second.name)) == 3
    rerun = build_dataset(root, num_levels=3, processes=2)
    assert rerun.ok, rerun.table()
    assert_built(root, data, 3)
    validate_plate(root)


def test_workers_of_a_killed_build_stop_and_the_rerun_finishes(tmp_path, rng):
    root = tmp_path / "plate.zarr"
    wells = (*WELLS, "C/1", "C/2", "D/1", "D/2")
    data = ome_zarr_plate(root, "0.5", rng, wells=wells, label_fields=("B/1/0",))
    child = faultkit.start(
        faultkit.child_dataset_build, str(root), {"num_levels": 3, "processes": 2}
    )
    message = child.wait_for(("image", "end"))
    assert message[0] == "image"
    workers = workers_of(child.process.pid)
    assert len(workers) == 2
    child.kill()
    # Their input ends with their parent: they roll back what they were building and exit.
    _gone, alive = psutil.wait_procs(workers, timeout=60)
    assert alive == []
    whole_or_untouched(root, data, 3)
    rerun = build_dataset(root, num_levels=3, processes=2)
    assert rerun.ok, rerun.table()
    assert_built(root, data, 3)
    validate_plate(root)


def test_without_a_python_to_start_the_images_are_built_here(tmp_path, rng, monkeypatch):
    root = tmp_path / "plate.zarr"
    data = ome_zarr_plate(root, "0.4", rng, wells=WELLS, label_fields=())
    monkeypatch.setattr("sys.executable", str(tmp_path / "no-such-python"))
    with pytest.warns(UserWarning, match="worker processes could not be started"):
        report = build_dataset(root, num_levels=2, processes=2)
    assert report.ok, report.table()
    assert_built(root, data, 2)
