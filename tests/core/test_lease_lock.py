"""The lease that holds an image where no OS lock exists (object stores, systems without one).

Against the behaviour a lock must have: one holder at a time, a second refused naming the
first, a live holder keeping it past its expiry by renewing, a dead or expired holder taken
over, and two builds taking over at once never both winning.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from napari_pyramids.errors import ImageBusyError, PyramidError
from napari_pyramids.storage.lease import FileLeaseStore, LeaseLock

BUSY = "busy: {holder}"


def lease(path, build="a", seconds=30.0):
    return LeaseLock(FileLeaseStore(path / "lock"), build, BUSY, seconds=seconds)


def test_second_holder_is_refused_naming_the_first(tmp_path):
    with lease(tmp_path, "a") as first:
        with pytest.raises(ImageBusyError, match=rf"^busy: pid {os.getpid()} on "):
            lease(tmp_path, "b").acquire()
        assert first.holds()
        assert json.loads((tmp_path / "lock").read_bytes())["build"] == "a"
    assert not (tmp_path / "lock").exists()
    with lease(tmp_path, "b") as second:
        assert second.holds()


def test_a_live_holder_renews_past_its_expiry(tmp_path):
    with lease(tmp_path, "a", seconds=0.4) as first:
        time.sleep(1.2)  # three lease lengths: only renewal keeps it
        with pytest.raises(ImageBusyError):
            lease(tmp_path, "b", seconds=0.4).acquire()
        assert first.holds()
    assert list(tmp_path.iterdir()) == []


def _write_lease(path, **fields):
    record = {"tool": "napari-pyramids", "build": "old", "since": "then", **fields}
    (path / "lock").write_text(json.dumps(record))


def test_an_expired_lease_of_another_host_is_taken_over(tmp_path):
    _write_lease(tmp_path, pid=1, host="elsewhere.invalid", expires=time.time() - 1)
    with lease(tmp_path, "new") as taker:
        assert taker.holds()
        assert json.loads((tmp_path / "lock").read_bytes())["build"] == "new"


def test_a_live_lease_of_another_host_is_respected(tmp_path):
    _write_lease(tmp_path, pid=1, host="elsewhere.invalid", expires=time.time() + 60)
    with pytest.raises(ImageBusyError, match=r"pid 1 on elsewhere\.invalid since then"):
        lease(tmp_path, "new").acquire()


def test_the_lease_of_a_dead_process_on_this_host_is_taken_over_at_once(tmp_path):
    import socket

    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead = int(child.stdout)
    _write_lease(tmp_path, pid=dead, host=socket.gethostname(), expires=time.time() + 60)
    with lease(tmp_path, "new") as taker:
        assert taker.holds()


def test_a_taken_over_lease_is_no_longer_held(tmp_path):
    first = lease(tmp_path, "a", seconds=60)
    first.acquire()
    try:
        record = json.loads((tmp_path / "lock").read_bytes())
        _write_lease(tmp_path, pid=1, host="elsewhere.invalid", expires=record["expires"])
        assert not first.holds()
    finally:
        first.release()
    # Release leaves someone else's lease in place.
    assert json.loads((tmp_path / "lock").read_bytes())["build"] == "old"


def test_two_takeovers_at_once_never_both_keep_the_lease(tmp_path):
    for round_ in range(30):
        folder = tmp_path / str(round_)
        folder.mkdir()
        _write_lease(folder, pid=1, host="elsewhere.invalid", expires=time.time() - 1)
        barrier = threading.Barrier(3)
        won, refused = [], []

        def take(name, folder=folder, barrier=barrier, won=won, refused=refused):
            lock = lease(folder, name, seconds=60)
            barrier.wait()
            try:
                lock.acquire()
            except ImageBusyError:
                refused.append(name)
                return
            won.append(lock)

        threads = [threading.Thread(target=take, args=(n,)) for n in "xyz"]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        holders = [lock for lock in won if lock.holds()]
        assert len(holders) == 1, (round_, [lock.build_id for lock in won], refused)
        for lock in won:
            lock.release()


def test_a_link_at_the_lease_path_is_refused(tmp_path):
    (tmp_path / "elsewhere").write_text("{}")
    os.symlink(tmp_path / "elsewhere", tmp_path / "lock")
    with pytest.raises(PyramidError, match="lock is a symbolic link; remove it and run again"):
        lease(tmp_path, "a").acquire()
    assert (tmp_path / "elsewhere").read_text() == "{}"


def test_a_build_removes_what_a_dying_lease_left_and_nothing_else(tmp_path):
    import numpy as np

    from imaging import level_paths, write_image
    from napari_pyramids.api import build_pyramid

    data = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    root = write_image(tmp_path / "image.zarr", data, chunks=(32, 32))
    left = [f".napari-pyramids.lock.{'a' * 32}.new", f".napari-pyramids.lock.{'b' * 32}.old"]
    kept = [".napari-pyramids.lock.notes.old", f"napari-pyramids.lock.{'c' * 32}.new"]
    for name in [*left, *kept]:
        (root / name).write_text("{}")
    build_pyramid(zarrurl=str(root), num_levels=2)
    assert len(level_paths(root)) == 2
    assert sorted(p.name for p in root.iterdir() if "lock" in p.name) == sorted(kept)
