"""A full disk or a read-only image: one clear line, and the image exactly as before.

Disk-full is injected three ways: chunk writes that fail once N bytes are written (zarr's
own file writer patched), a failure at every filesystem change the store makes, and a real
small tmpfs (as root, where ``mount`` works; skipped otherwise). Read-only is a read-only
bind mount (root) and an unprivileged user (a child that drops to ``nobody``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import zarr.storage._local as zarr_local

from faultkit import (
    IMAGE_NAME,
    SCENARIO_CONFIGS,
    Scenario,
    Steps,
    StepSchedule,
    hidden_leftovers,
    prepare,
    rerun_completes,
    start,
)
from imaging import CHANGE_RECORD, tree_snapshot
from napari_pyramids.api import build_pyramid
from napari_pyramids.pyramid import plan
from napari_pyramids.storage import LocalStore
from napari_pyramids.storage import transaction as store
from napari_pyramids.storage.transaction import StorageError


@pytest.fixture(scope="module", params=SCENARIO_CONFIGS)
def scenario(request, tmp_path_factory) -> Scenario:
    zarr_format, overwrite = request.param
    data = np.random.default_rng(7).integers(1, 4096, size=(3, 128, 96), dtype=np.uint16)
    scenario = prepare(
        tmp_path_factory.mktemp("storage"),
        data,
        zarr_format=zarr_format,
        chunks=(1, 32, 32),
        overwrite=overwrite,
        num_levels=3,
    )
    scenario.params["workers"] = 2
    return scenario


def new_bytes(scenario: Scenario) -> int:
    """Bytes of the chunk files a build adds (at least what must fit on the disk)."""
    rebuilt = scenario.copy(Path(tempfile.mkdtemp()) / "sizes")
    try:
        build_pyramid(zarrurl=rebuilt, **scenario.params)
        return sum(
            f.stat().st_size
            for level in ("1", "2")
            for f in (rebuilt / level).rglob("*")
            # The change record is written after the publish (its failure only warns).
            if f.is_file() and f.name not in (".zarray", "zarr.json", CHANGE_RECORD)
        )
    finally:
        shutil.rmtree(rebuilt.parent.parent)


def assert_one_line(message: str, *words: str) -> None:
    assert "\n" not in message
    for word in words:
        assert word in message


def chunk_writes_through(monkeypatch, write) -> None:
    """Route every chunk file the engine writes, through zarr or directly, via ``write``.

    ``write(path, size, do)`` may raise; ``do()`` performs the real write.
    """
    real_put, real_set = zarr_local._put, LocalStore.set

    def put(path, value, exclusive=False):
        size = len(value.as_buffer_like())
        return write(path, size, lambda: real_put(path, value, exclusive=exclusive))

    def store_set(store, key, data):
        size = memoryview(data).nbytes
        return write(store.path(key), size, lambda: real_set(store, key, data))

    monkeypatch.setattr(zarr_local, "_put", put)
    monkeypatch.setattr(LocalStore, "set", store_set)


def test_chunk_writes_failing_after_n_bytes(scenario, tmp_path, monkeypatch):
    total = new_bytes(scenario)
    for budget in (0, total // 7, total // 2, total - 1):
        with monkeypatch.context() as patch:
            written = 0

            def write(path, size, do, budget=budget):
                nonlocal written
                if written + size > budget:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
                written += size
                return do()

            chunk_writes_through(patch, write)
            root = scenario.copy(tmp_path / f"budget{budget}")
            with pytest.raises(StorageError) as info:
                build_pyramid(zarrurl=root, **scenario.params)
        assert_one_line(str(info.value), "disk is full", "unchanged")
        assert tree_snapshot(root) == scenario.before
    rerun_completes(scenario, root)


def test_a_failed_chunk_write_leaves_no_straggling_writes(scenario, tmp_path, monkeypatch):
    # zarr keeps writing the other chunks of an assignment after one fails, and the other
    # worker keeps writing its block: the build must wait for them before it removes its
    # folder, or they recreate it afterwards.
    calls = 0

    def write(path, size, do):
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        time.sleep(0.05)
        return do()

    chunk_writes_through(monkeypatch, write)
    monkeypatch.setattr(plan, "TARGET_BLOCK_BYTES", 64 * 1024)  # many blocks, two at once
    root = scenario.copy(tmp_path / "image")
    with pytest.raises(StorageError, match="disk is full"):
        build_pyramid(zarrurl=root, **{**scenario.params, "workers": 2})
    assert calls > 2, "other chunk writes ran after the failure"
    assert tree_snapshot(root) == scenario.before
    time.sleep(0.5)  # any straggler would have landed by now
    assert tree_snapshot(root) == scenario.before


def test_no_space_at_every_store_step(scenario, tmp_path):
    counter = Steps()
    with counter.installed(store):
        build_pyramid(zarrurl=scenario.copy(tmp_path / "count"), **scenario.params)
    error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    schedule = StepSchedule(counter.count)
    failed = built = 0
    for step in schedule:
        root = scenario.copy(tmp_path / f"step{step}")
        with Steps(fail_at=step, error=error).installed(store):
            try:
                build_pyramid(zarrurl=root, **scenario.params)
            except StorageError as exc:
                assert_one_line(str(exc), "disk is full")
                failed += 1
            else:
                # Only a failure after the commit (clean-up) may let the build succeed.
                built += 1
                schedule.committed(step)
        if tree_snapshot(root) != scenario.before:
            assert scenario.expected.at(root).check() == "final", f"step {step}"
            schedule.committed(step)
            rerun_completes(scenario, root)
    assert failed > 0


# --------------------------------------------------------------------------- real mounts


def _run(*command: str) -> bool:
    return subprocess.run(command, capture_output=True, check=False).returncode == 0


@contextlib.contextmanager
def mounted(*options: str, source: str = "tmpfs", kind: str = "tmpfs"):
    """A fresh mount point with ``mount`` applied; skips when mounting is not allowed."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount")
    point = Path(tempfile.mkdtemp(prefix="napari-pyramids-mnt-"))
    args = ["mount", *(("-t", kind) if kind else ()), *options, source, str(point)]
    if not _run(*args):
        point.rmdir()
        pytest.skip(f"mount refused: {' '.join(args)}")
    try:
        yield point
    finally:
        _run("umount", str(point))
        point.rmdir()


def test_real_full_tmpfs(scenario):
    need = new_bytes(scenario)
    for free in (0, 4096, need // 4, need // 2, int(need * 0.9)):
        with mounted("-o", "size=16m") as disk:
            root = scenario.copy(disk / "image")
            stats = os.statvfs(disk)
            available = stats.f_bavail * stats.f_frsize
            (disk / "filler").write_bytes(b"\0" * max(0, available - free))
            before = tree_snapshot(root)
            with pytest.raises(StorageError) as info:
                build_pyramid(zarrurl=root, **scenario.params)
            assert_one_line(str(info.value), "disk is full", "unchanged")
            assert tree_snapshot(root) == before, f"{free} bytes free"
            # Free the space: the same call then completes.
            (disk / "filler").unlink()
            build_pyramid(zarrurl=root, **scenario.params)
            assert scenario.expected.at(root).check() == "final"
            assert hidden_leftovers(root) == []


def test_read_only_mount(scenario, tmp_path):
    root = scenario.copy(tmp_path / "image")
    with mounted("--bind", source=str(root.parent), kind="") as view:
        if not _run("mount", "-o", "remount,bind,ro", str(view)):
            pytest.skip("read-only remount refused")
        with pytest.raises(StorageError) as info:
            build_pyramid(zarrurl=view / IMAGE_NAME, **scenario.params)
        assert_one_line(str(info.value), "read-only", "unchanged")
    assert tree_snapshot(root) == scenario.before


def _build_as_nobody(root: str, params: dict, conn) -> None:
    """Drop to user nobody, then run the CLI; send back its exit status and stderr."""
    import io

    from napari_pyramids import cli

    cli._parser()  # imports before losing access to the interpreter's files
    __import__("tqdm")
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        argv = ["build", root, "--levels", str(params["num_levels"]), "--quiet"]
        status = cli.main(argv + (["--overwrite"] if params["overwrite"] else []))
    conn.send((status, stderr.getvalue()))


def test_read_only_for_an_unprivileged_user(scenario):
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to user nobody")
    base = Path(tempfile.mkdtemp(prefix="napari-pyramids-ro-"))
    try:
        base.chmod(0o755)  # nobody may read the image, not write it
        root = scenario.copy(base / "image")
        before = tree_snapshot(root)
        child = start(_build_as_nobody, str(root), scenario.params)
        status, stderr = child.conn.recv()
        child.process.join(30)
        assert status == 2
        assert stderr.count("\n") == 1
        assert_one_line(stderr.strip(), "read-only", "unchanged")
        assert tree_snapshot(root) == before
    finally:
        shutil.rmtree(base)
