"""Fault-injection kit: builds in killable child processes, and what a reader must always see.

Children are forked from a ``forkserver`` that has already imported the package, so a trial
costs milliseconds instead of an interpreter start. The package is used as a user would:
through ``iter_build`` and its progress. The only test-side instrument is :class:`Steps`,
which wraps the ``os``/``shutil`` functions the store module calls so that a child can
SIGKILL itself (or pause) right before its N-th filesystem change; the package has no hook.
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import shutil
import signal
import time
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from imaging import file_hashes, metadata_file

IMAGE_NAME = "img.zarr"


# --------------------------------------------------------------------------- references


def vector_level(data: np.ndarray, factors: Sequence[int], method: str) -> np.ndarray:
    """One level down with whole-array numpy (trim edges): mean (ties to even) or nearest."""
    trimmed = data[tuple(slice(0, (n // f) * f) for n, f in zip(data.shape, factors, strict=True))]
    if method == "nearest":
        return np.ascontiguousarray(trimmed[tuple(slice(None, None, f) for f in factors)])
    if method != "mean" or data.dtype.kind not in "iu":
        raise ValueError(f"vector_level only does integer mean and nearest, not {method}")
    out = np.empty(tuple(n // f for n, f in zip(data.shape, factors, strict=True)), data.dtype)
    count = math.prod(factors)
    # One leading-axis slab at a time keeps the int64 copy small for big images.
    step = factors[0]
    for i in range(out.shape[0]):
        slab = trimmed[i * step : (i + 1) * step]
        shape = [m for n, f in zip(slab.shape, factors, strict=True) for m in (n // f, f)]
        windows = slab.reshape(shape).astype(np.int64)
        total = windows.sum(axis=tuple(range(1, 2 * data.ndim, 2)))[0]
        quotient, remainder = np.divmod(total, count)
        quotient += (2 * remainder > count) | ((2 * remainder == count) & (quotient % 2 == 1))
        out[i] = quotient
    return out


def vector_pyramid(
    data: np.ndarray, factors: Sequence[int], num_levels: int, method: str
) -> list[np.ndarray]:
    levels = [data]
    for _ in range(1, num_levels):
        levels.append(vector_level(levels[-1], factors, method))
    return levels


# --------------------------------------------------------------------------- image state


def listed_paths(document: dict[str, Any]) -> list[str]:
    ome = document["attributes"]["ome"] if "attributes" in document else document
    return [d["path"] for d in ome["multiscales"][0]["datasets"]]


def only_level0(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with the first multiscales entry listing level 0 alone."""
    document = json.loads(json.dumps(document))
    ome = document["attributes"]["ome"] if "attributes" in document else document
    ome["multiscales"][0]["datasets"] = ome["multiscales"][0]["datasets"][:1]
    return document


def validate_ome(root: Path) -> None:
    """ome-zarr-models reads the image: metadata valid and every listed array present."""
    group = zarr.open_group(root, mode="r")
    if (root / "zarr.json").exists():
        from ome_zarr_models.v05.image import Image
    else:
        from ome_zarr_models.v04.image import Image
    Image.from_zarr(group)


@dataclass
class Expected:
    """What a reader may find: level 0 as it was, and one of a few whole metadata versions."""

    root: Path
    level0: str
    level0_hashes: dict[str, str]
    original: bytes
    final: bytes
    old_levels: list[np.ndarray]  # levels the original metadata lists (level 0 first)
    new_levels: list[np.ndarray]
    allow_intermediate: bool
    seen: dict[str, int] = field(default_factory=dict)

    def at(self, root: Path) -> Expected:
        """The same expectation for a copy of the image at ``root``."""
        return Expected(
            root,
            self.level0,
            self.level0_hashes,
            self.original,
            self.final,
            self.old_levels,
            self.new_levels,
            self.allow_intermediate,
            self.seen,
        )

    def check(self) -> str:
        """Assert the image is readable and whole; return which version a reader sees."""
        root = self.root
        assert file_hashes(root / self.level0) == self.level0_hashes, "level 0 changed"
        raw = metadata_file(root).read_bytes()
        document = json.loads(raw)
        if raw == self.original:
            state, levels = "original", self.old_levels
        elif raw == self.final:
            state, levels = "final", self.new_levels
        else:
            # While levels move, an overwrite lists level 0 alone (in either version's words).
            assert self.allow_intermediate, "metadata is neither the original nor the final"
            known = [only_level0(json.loads(doc)) for doc in (self.original, self.final)]
            assert document in known, f"unknown metadata document {raw!r}"
            state, levels = "intermediate", self.old_levels[:1]
        paths = listed_paths(document)
        assert len(paths) == len(levels), (state, paths)
        if (root / "zarr.json").exists() or (root / ".zgroup").exists():
            validate_ome(root)
        else:
            # A v2 image without .zgroup (not a zarr group) may only be the untouched original.
            assert state == "original", "the build published without writing .zgroup"
        for path, want in zip(paths[1:], levels[1:], strict=True):
            got = zarr.open_array(root / path, mode="r")[...]
            assert (got.dtype, got.shape) == (want.dtype, want.shape), (state, path)
            assert np.array_equal(got, want), f"level {path} differs from the reference ({state})"
        self.seen[state] = self.seen.get(state, 0) + 1
        return state


def hidden_leftovers(root: Path) -> list[str]:
    return sorted(n for n in os.listdir(root) if n.startswith(".napari-pyramids"))


# --------------------------------------------------------------------------- children


class Steps:
    """Counts the store module's filesystem changes; before the N-th one, kills, pauses or
    raises (``pause_at`` may be ``"all"``: pause before every change)."""

    def __init__(
        self,
        kill_at: int | None = None,
        pause_at: int | str | None = None,
        conn: Any = None,
        fail_at: int | None = None,
        error: BaseException | None = None,
    ) -> None:
        self.kill_at = kill_at
        self.pause_at = pause_at
        self.conn = conn
        self.fail_at = fail_at
        self.error = error
        self.count = 0

    def __call__(self, what: str) -> None:
        self.count += 1
        if self.count == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        if self.count == self.fail_at and self.error is not None:
            raise self.error
        if self.count == self.pause_at or self.pause_at == "all":
            self.conn.send(("paused", self.count, what))
            self.conn.recv()

    def install(self, module: types.ModuleType) -> None:
        """Point ``module.os`` and ``module.shutil`` at counting stand-ins."""
        module.os = _CountingOs(self)  # type: ignore[attr-defined]
        module.shutil = types.SimpleNamespace(rmtree=self._rmtree)  # type: ignore[attr-defined]

    @contextlib.contextmanager
    def installed(self, module: types.ModuleType) -> Iterator[Steps]:
        """:meth:`install` for the duration of a ``with`` block (in this process)."""
        saved = module.os, module.shutil  # type: ignore[attr-defined]
        self.install(module)
        try:
            yield self
        finally:
            module.os, module.shutil = saved  # type: ignore[attr-defined]

    def _rmtree(self, path: Any) -> None:
        # Bottom-up, one entry per step, so a kill can land in the middle of a removal.
        for dirpath, dirs, files in os.walk(path, topdown=False):
            for name in files:
                self(f"unlink {name}")
                os.unlink(os.path.join(dirpath, name))
            for name in dirs:
                self(f"rmdir {name}")
                os.rmdir(os.path.join(dirpath, name))
        self(f"rmdir {path}")
        os.rmdir(path)


class _CountingOs:
    """``os`` with a step before every call that changes the filesystem."""

    _CHANGES = ("mkdir", "rename", "replace", "unlink", "rmdir", "ftruncate", "pwrite")

    def __init__(self, steps: Steps) -> None:
        self._steps = steps

    def __getattr__(self, name: str) -> Any:
        real = getattr(os, name)
        if name not in self._CHANGES:
            return real

        def changed(*args: Any, **kwargs: Any) -> Any:
            self._steps(f"{name} {args[0]}")
            return real(*args, **kwargs)

        return changed

    def open(self, path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_CREAT:
            self._steps(f"create {path}")
        return os.open(path, flags, *args, **kwargs)


def child_build(
    root: str,
    params: dict[str, Any],
    conn: Any,
    kill_at: int | None = None,
    pause_at: int | str | None = None,
) -> None:
    """Run ``iter_build`` reporting each progress step; count (kill, pause at) store steps."""
    from napari_pyramids import engine
    from napari_pyramids.errors import PyramidError
    from napari_pyramids.storage import transaction as store

    steps = Steps(kill_at, pause_at, conn)
    if kill_at is not None or pause_at is not None:
        steps.install(store)
    conn.send(("start", time.monotonic()))
    try:
        for progress in engine.iter_build(root, **params):
            conn.send((progress.phase, time.monotonic(), progress.done))
    except PyramidError as exc:
        conn.send(("error", type(exc).__name__, str(exc)))
        return
    conn.send(("end", time.monotonic(), steps.count))


def child_hold_lock(root: str, conn: Any) -> None:
    """Take the image lock the way a build does, say so, then wait (to be killed)."""
    from napari_pyramids.storage.transaction import ImageLock

    with ImageLock(Path(root), "holder"):
        conn.send(("locked", os.getpid()))
        conn.recv()


_CONTEXT: Any = None


def context() -> Any:
    """A forkserver context whose server has the package and zarr already imported."""
    global _CONTEXT
    if _CONTEXT is None:
        ctx = multiprocessing.get_context("forkserver")
        # numcodecs.blosc makes a multiprocessing lock on import: once in the server, not
        # once per killed child (whose semaphores the resource tracker would then report).
        ctx.set_forkserver_preload(["faultkit", "napari_pyramids.engine", "numcodecs.blosc"])
        _CONTEXT = ctx
    return _CONTEXT


@dataclass
class Child:
    """A build child and the messages it sent so far."""

    process: Any
    conn: Any
    messages: list[tuple[Any, ...]] = field(default_factory=list)

    def receive(self, timeout: float) -> tuple[Any, ...] | None:
        if self.conn.poll(timeout):
            with contextlib.suppress(EOFError):
                message = self.conn.recv()
                self.messages.append(message)
                return message
        return None

    def wait_for(self, kinds: Sequence[str], timeout: float = 60) -> tuple[Any, ...]:
        """Messages until one of ``kinds`` (or the child's end); returns that message."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self.receive(0.05)
            if message is not None and message[0] in kinds:
                return message
            if message is None and not self.process.is_alive() and not self.conn.poll():
                return ("exited", self.process.exitcode)
        raise AssertionError(f"child sent none of {kinds} within {timeout} s: {self.messages}")

    def drain(self) -> None:
        while self.receive(0) is not None:
            pass

    def kill(self) -> None:
        self.process.kill()
        self.process.join()
        self.drain()

    def finish(self, timeout: float = 120) -> tuple[Any, ...]:
        message = self.wait_for(("end", "error"), timeout)
        self.process.join(timeout)
        return message

    @property
    def last_phase(self) -> str:
        phases = [m[0] for m in self.messages if m[0] not in ("paused",)]
        return phases[-1] if phases else "not started"


def start(target: Callable[..., None], *args: Any) -> Child:
    ctx = context()
    parent, child = ctx.Pipe()
    process = ctx.Process(target=target, args=(*args, child), daemon=True)
    process.start()
    child.close()
    return Child(process, parent)


def start_build(
    root: Path,
    params: dict[str, Any],
    kill_at: int | None = None,
    pause_at: int | str | None = None,
) -> Child:
    ctx = context()
    parent, child = ctx.Pipe()
    process = ctx.Process(
        target=child_build, args=(str(root), params, child, kill_at, pause_at), daemon=True
    )
    process.start()
    child.close()
    return Child(process, parent)


def copy_image(source: Path, parent: Path) -> Path:
    """A copy of the image at ``parent/img.zarr`` (tree snapshots compare across parents)."""
    parent.mkdir(parents=True)
    return Path(shutil.copytree(source, parent / IMAGE_NAME, symlinks=True))


def trials(default: int) -> int:
    """Trials per setting: ``NAPARI_PYRAMIDS_TRIALS`` for a long run, else ``default``."""
    return int(os.environ.get("NAPARI_PYRAMIDS_TRIALS", default))


def long_run() -> bool:
    return trials(0) >= 10


class StepSchedule:
    """Steps 1..total; once the build is known to have committed, only a sample of the rest.

    After the final metadata is written every remaining step is clean-up (one per deleted
    file); a short run tries ``after_commit`` of them, spread out, and always the last one.
    A long run (:func:`long_run`) tries every step.
    """

    def __init__(self, total: int, after_commit: int = 6) -> None:
        self.total = total
        self.after_commit = after_commit
        self.stride = 1

    def committed(self, step: int) -> None:
        if self.stride == 1 and not long_run():
            self.stride = max(1, (self.total - step) // self.after_commit)

    def __iter__(self) -> Iterator[int]:
        step = 1
        while step <= self.total:
            yield step
            if step < self.total:
                step = min(step + self.stride, self.total)
            else:
                step += 1


def report(capsys: Any, line: str) -> None:
    """Print a summary line past pytest's capture, so runs show their trial counts."""
    with capsys.disabled():
        print(f"\n{line}")


@dataclass
class Scenario:
    """One build call on one image: the pristine image, and the trees before and after."""

    pristine: Path
    params: dict[str, Any]
    expected: Expected
    before: dict[str, str]
    after: dict[str, str]

    def copy(self, parent: Path) -> Path:
        return copy_image(self.pristine, parent)


def prepare(
    tmp: Path,
    data: np.ndarray,
    *,
    zarr_format: int,
    chunks: Sequence[int],
    overwrite: bool,
    num_levels: int,
    old_levels: int = 3,
    zgroup: bool = True,
) -> Scenario:
    """An image (with an old 'nearest' pyramid when ``overwrite``) and the reference build.

    The call under test builds ``num_levels`` levels with the default method (mean).
    ``zgroup=False`` removes a v2 image's ``.zgroup``, which the build then adds.
    """
    from imaging import tree_snapshot, write_image
    from napari_pyramids.api import build_pyramid

    factors = (1,) * (data.ndim - 2) + (2, 2)
    root = write_image(tmp / "pristine" / IMAGE_NAME, data, zarr_format=zarr_format, chunks=chunks)
    if not zgroup:
        (root / ".zgroup").unlink()
    old = [data]
    if overwrite:
        build_pyramid(zarrurl=root, num_levels=old_levels, method="nearest")
        old = vector_pyramid(data, factors, old_levels, "nearest")
    params = {"num_levels": num_levels, "overwrite": overwrite}
    original = metadata_file(root).read_bytes()
    before = tree_snapshot(root)
    reference = copy_image(root, tmp / "reference")
    build_pyramid(zarrurl=reference, **params)
    expected = Expected(
        root=root,
        level0="0",
        level0_hashes=file_hashes(root / "0"),
        original=original,
        final=metadata_file(reference).read_bytes(),
        old_levels=old,
        new_levels=vector_pyramid(data, factors, num_levels, "mean"),
        allow_intermediate=overwrite,
    )
    assert expected.check() == "original"
    assert expected.at(reference).check() == "final"
    after = tree_snapshot(reference)
    shutil.rmtree(reference.parent)
    expected.seen.clear()
    return Scenario(root, params, expected, before, after)


def rerun_completes(scenario: Scenario, root: Path, **extra: Any) -> None:
    """The same call again: it finishes the pyramid (or says it exists, if it was finished).

    Either way the tree is then exactly what a clean build leaves, leftovers removed.
    """
    import pytest

    from imaging import tree_snapshot
    from napari_pyramids.api import build_pyramid
    from napari_pyramids.errors import PyramidError

    finished = metadata_file(root).read_bytes() == scenario.expected.final
    if finished and not scenario.params["overwrite"]:
        with pytest.raises(PyramidError, match="already exists"):
            build_pyramid(zarrurl=root, **scenario.params, **extra)
    else:
        build_pyramid(zarrurl=root, **scenario.params, **extra)
    assert hidden_leftovers(root) == []
    assert tree_snapshot(root) == scenario.after


# The two ends of the matrix most suites run: zarr v2 building fresh levels, and zarr v3
# replacing an old pyramid (overwrite), as ``(zarr_format, overwrite)`` parameters.
SCENARIO_CONFIGS = [
    pytest.param((2, False), id="v2"),
    pytest.param((3, True), id="v3-overwrite"),
]


def child_dataset_build(root: str, params: dict[str, Any], conn: Any) -> None:
    """Run ``build_dataset``, sending ``("image", images_done, name)`` as each image ends."""
    from napari_pyramids import build_dataset

    def progress(step: Any) -> None:
        if step.finished is not None:
            conn.send(("image", step.images_done, step.finished.name))

    conn.send(("start", time.monotonic()))
    report = build_dataset(root, progress=progress, **params)
    conn.send(("end", report.ok))


def child_update(root: str, kill_at: int | None, conn: Any) -> None:
    """Run ``iter_update``, counting the store module's filesystem changes (kill at one)."""
    from napari_pyramids.storage import transaction as store
    from napari_pyramids.update import iter_update

    steps = Steps(kill_at)
    steps.install(store)
    conn.send(("start", time.monotonic()))
    gen = iter_update(root, workers=2)
    try:
        while True:
            progress = next(gen)
            conn.send((progress.phase, time.monotonic(), progress.done))
    except StopIteration as stop:
        conn.send(("end", stop.value.status, steps.count))
