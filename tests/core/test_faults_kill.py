"""SIGKILL at any moment leaves the image whole, and the same call run again completes.

Two ways of killing a build child:

- at every single filesystem change the store makes (lock, build folder, journal, each
  rename of the publish, each file of the clean-up), then again at a random change while the
  next build recovers from the first kill;
- at random wall-clock moments: a third while writing, a third anywhere in the publish, a
  third around the moment levels move (measured by watching an uninterrupted build).

After every kill an independent reader (zarr + ome-zarr-models) must find level 0
byte-identical and a metadata document that is the original or the final one (or, with
overwrite, the original listing level 0 alone) whose every level is complete and equal to
the numpy reference; recovery must give back exactly the tree before or exactly the tree a
clean build makes.

Trials: ``NAPARI_PYRAMIDS_TRIALS`` per format and overwrite setting (default 3) and
``NAPARI_PYRAMIDS_KILL_MIB`` for the image size (default 16) in the random-moment test.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass

import numpy as np
import pytest

from faultkit import (
    Scenario,
    Steps,
    StepSchedule,
    prepare,
    report,
    rerun_completes,
    start_build,
    trials,
    vector_pyramid,
)
from imaging import metadata_file, reference_pyramid, tree_snapshot
from napari_pyramids.storage.transaction import ImageLock, recover

CONFIGS = [
    pytest.param(2, False, id="v2"),
    pytest.param(2, True, id="v2-overwrite"),
    pytest.param(3, False, id="v3"),
    pytest.param(3, True, id="v3-overwrite"),
]


def test_vector_reference_matches_window_reference(rng):
    data = rng.integers(1, 4096, size=(3, 37, 42), dtype=np.uint16)
    for method in ("mean", "nearest"):
        fast = vector_pyramid(data, (1, 2, 2), 4, method)
        slow = reference_pyramid(data, (1, 2, 2), 4, method)
        for a, b in zip(fast, slow, strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("zarr_format", "overwrite", "zgroup"),
    [
        *(pytest.param(*config.values, True, id=config.id) for config in CONFIGS),
        pytest.param(2, False, False, id="v2-adds-zgroup"),
    ],
)
def test_kill_at_every_store_step_then_during_recovery(
    tmp_path, rng, zarr_format, overwrite, zgroup, capsys
):
    data = rng.integers(1, 4096, size=(2, 40, 48), dtype=np.uint16)
    scenario = prepare(
        tmp_path,
        data,
        zarr_format=zarr_format,
        chunks=(1, 32, 32),
        overwrite=overwrite,
        num_levels=3,
        old_levels=4,  # overwrite drops level 3 and replaces 1 and 2
        zgroup=zgroup,
    )
    counting = start_build(scenario.copy(tmp_path / "count"), scenario.params, kill_at=10**9)
    kind, _, total = counting.finish()
    assert kind == "end"
    assert total > 10
    schedule = StepSchedule(total)
    tried = 0
    for step in schedule:
        tried += 1
        root = scenario.copy(tmp_path / f"kill{step}")
        child = start_build(root, scenario.params, kill_at=step)
        child.process.join(60)
        assert child.process.exitcode == -9, f"step {step} of {total} was not reached"
        expected = scenario.expected.at(root)
        if expected.check() == "final":
            schedule.committed(step)
        # Kill the next build too, anywhere in its recovery (or in its own build after it).
        again = start_build(root, scenario.params, kill_at=int(rng.integers(1, total + 1)))
        again.process.join(60)
        expected.check()
        rerun_completes(scenario, root)
    seen = scenario.expected.seen
    report(
        capsys,
        f"kill -9 at store steps v{zarr_format} overwrite={overwrite} zgroup={zgroup}: "
        f"{tried} of {total} steps killed and recovered (each followed by a kill during "
        f"recovery); reader saw {seen}",
    )
    assert seen.get("original")
    assert seen.get("final")
    if overwrite:
        assert seen.get("intermediate")


@dataclass
class Timing:
    """Seconds from a child's messages, and when (after "publishing") the image changed."""

    writing: float  # "start" to "publishing"
    publish: float  # "publishing" to the end
    moves: tuple[float, float]  # first visible change to final metadata


def _kill_delay(rng: np.random.Generator, trial: int, timing: Timing) -> tuple[str, float]:
    """Kills in turn: while writing, anywhere in the publish, around the renames."""
    if trial % 3 == 0:
        return "start", float(rng.uniform(0, timing.writing))
    if trial % 3 == 1:
        return "publishing", float(rng.uniform(0, 1.2 * timing.publish))
    first, last = timing.moves
    return "publishing", float(rng.uniform(0.9 * first, 1.1 * last + 0.002))


def _calibrate(scenario: Scenario, tmp_path) -> Timing:
    """Uninterrupted children (mean of two), watched from here while they publish."""
    runs = []
    for run in range(2):
        root = scenario.copy(tmp_path / f"calibration{run}")
        listing = sorted(os.listdir(root))
        child = start_build(root, scenario.params)
        start = child.wait_for(("start",))[1]
        publishing = child.wait_for(("publishing",))[1]
        first = last = None
        # Poll the image as a reader would, to see when levels move and the metadata lands.
        while last is None and child.process.is_alive():
            now = time.monotonic()
            visible = sorted(n for n in os.listdir(root) if not n.startswith(".napari"))
            if first is None and visible != [n for n in listing if not n.startswith(".napari")]:
                first = now - publishing
            if metadata_file(root).read_bytes() == scenario.expected.final:
                last = now - publishing
        end = child.finish()[1]
        assert tree_snapshot(root) == scenario.after
        last = end - publishing if last is None else last
        first = last if first is None else first
        runs.append((publishing - start, end - publishing, first, last))
        shutil.rmtree(root.parent)
    writing, publish, first, last = (float(np.mean(v)) for v in zip(*runs, strict=True))
    return Timing(writing, publish, (first, last))


@pytest.mark.parametrize(("zarr_format", "overwrite"), CONFIGS)
def test_sigkill_at_random_moments(tmp_path, zarr_format, overwrite, capsys):
    mib = int(os.environ.get("NAPARI_PYRAMIDS_KILL_MIB", 16))
    count = trials(3)
    seed = int(os.environ.get("NAPARI_PYRAMIDS_SEED", time.time_ns() % 2**32))
    rng = np.random.default_rng(seed)
    planes = max(1, mib // 2)  # 1024 x 1024 uint16 planes of 2 MiB
    data = rng.integers(1, 4096, size=(planes, 1024, 1024), dtype=np.uint16)
    scenario = prepare(
        tmp_path,
        data,
        zarr_format=zarr_format,
        chunks=(1, 256, 256),
        overwrite=overwrite,
        num_levels=4,
    )
    timing = _calibrate(scenario, tmp_path)

    landed: dict[str, int] = {}
    survived = 0
    for trial in range(count):
        root = scenario.copy(tmp_path / f"trial{trial}")
        child = start_build(root, scenario.params)
        after, delay = _kill_delay(rng, trial, timing)
        child.wait_for((after, "end"))
        time.sleep(delay)
        child.kill()
        landed[child.last_phase] = landed.get(child.last_phase, 0) + 1
        expected = scenario.expected.at(root)
        expected.check()
        if trial % 2:
            # Recovery alone gives back one of the two whole trees, byte for byte.
            with ImageLock(root, "test"):
                recover(root)
            assert tree_snapshot(root) in (scenario.before, scenario.after)
        rerun_completes(scenario, root)
        survived += 1
        # Keep the disk use of a long run flat.
        shutil.rmtree(root.parent)
    report(
        capsys,
        f"kill -9 v{zarr_format} overwrite={overwrite} {mib} MiB (seed {seed}): "
        f"{survived}/{count} trials survived; writing {timing.writing:.2f} s, publish "
        f"{timing.publish:.2f} s (levels move at {timing.moves[0] * 1000:.0f}-"
        f"{timing.moves[1] * 1000:.0f} ms); "
        f"last progress before the kill {landed}; reader saw {scenario.expected.seen}",
    )


def test_info_tells_of_an_interrupted_overwrite_until_the_rerun_rolls_it_back(
    tmp_path, rng, capsys
):
    """A kill while levels are swapped leaves level 0 alone listed: `info` says why and what
    to do, and the same build run again finishes and the remark goes away."""
    from napari_pyramids.cli import main

    data = rng.integers(1, 4096, size=(2, 40, 48), dtype=np.uint16)
    scenario = prepare(
        tmp_path, data, zarr_format=2, chunks=(1, 32, 32), overwrite=True, num_levels=3
    )
    for step in range(1, 200):
        root = scenario.copy(tmp_path / f"kill{step}")
        child = start_build(root, scenario.params, kill_at=step)
        child.process.join(60)
        assert child.process.exitcode == -9, f"the build ended before step {step}"
        if scenario.expected.at(root).check() == "intermediate":
            break
        shutil.rmtree(root.parent)
    else:
        pytest.fail("no kill left the image listing level 0 alone")
    capsys.readouterr()
    assert main(["info", str(root)]) == 0
    out = capsys.readouterr().out
    assert "level 1" not in out
    assert out.count("an interrupted build left '.napari-pyramids-build-") == 1
    assert "run the same build again" in out
    rerun_completes(scenario, root)
    assert main(["info", str(root)]) == 0
    out = capsys.readouterr().out
    assert "interrupted" not in out
    assert "level 2" in out


def test_kills_around_the_staged_change_record_leave_the_image_whole_and_are_cleaned_up(
    tmp_path, rng
):
    """The record is written into the build folder before the flush and moved beside level 1
    after the metadata: a kill at either step leaves the image as it was or complete, and the
    rerun leaves exactly what a clean build leaves."""
    from napari_pyramids.api import build_pyramid
    from napari_pyramids.storage import transaction as store

    data = rng.integers(1, 4096, size=(2, 40, 48), dtype=np.uint16)
    scenario = prepare(
        tmp_path, data, zarr_format=3, chunks=(1, 32, 32), overwrite=False, num_levels=3
    )

    class Recording(Steps):
        def __init__(self) -> None:
            super().__init__()
            self.names: list[str] = []

        def __call__(self, what: str) -> None:
            self.names.append(what)
            super().__call__(what)

    steps = Recording()
    with steps.installed(store):
        build_pyramid(zarrurl=scenario.copy(tmp_path / "count"), **scenario.params)
    around = [k + 1 for k, what in enumerate(steps.names) if what.endswith(store.STAGED_RECORD)]
    assert len(around) == 2  # staged (created), then placed (replaced)
    seen = []
    for step in (*around, around[-1] + 1):
        root = scenario.copy(tmp_path / f"kill{step}")
        child = start_build(root, scenario.params, kill_at=step)
        child.process.join(60)
        assert child.process.exitcode == -9, f"step {step} was not reached"
        seen.append(scenario.expected.at(root).check())
        rerun_completes(scenario, root)
    assert seen == ["original", "final", "final"]


def test_a_build_folder_without_journal_holding_a_staged_record_is_removed(tmp_path, rng):
    from napari_pyramids.api import build_pyramid
    from napari_pyramids.storage.transaction import BUILD_PREFIX, STAGED_RECORD

    data = rng.integers(1, 4096, size=(2, 40, 48), dtype=np.uint16)
    scenario = prepare(
        tmp_path, data, zarr_format=2, chunks=(1, 32, 32), overwrite=False, num_levels=3
    )
    root = scenario.copy(tmp_path / "left")
    folder = root / f"{BUILD_PREFIX}0123456789ab"
    (folder / "levels" / "1").mkdir(parents=True)
    (folder / "aside").mkdir()
    (folder / STAGED_RECORD).write_bytes(b"{}")
    build_pyramid(zarrurl=root, **scenario.params)
    assert not folder.exists()
    assert tree_snapshot(root) == scenario.after


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_build_folder_with_a_torn_first_journal_is_removed_only_if_it_holds_new_data(
    tmp_path, rng, monkeypatch, zarr_format
):
    """A build's first journal is not flushed (the publish flushes its own before anything
    moves): a power cut before the publish's flush may leave it torn beside the new levels
    and the staged documents. Such a folder never published: the next build removes it and
    finishes. A torn journal beside an old level moved aside is left alone."""
    from napari_pyramids.api import build_pyramid
    from napari_pyramids.storage import transaction as store

    data = rng.integers(1, 4096, size=(2, 40, 48), dtype=np.uint16)
    scenario = prepare(
        tmp_path, data, zarr_format=zarr_format, chunks=(1, 32, 32), overwrite=False,
        num_levels=3,
    )  # fmt: skip
    root = scenario.copy(tmp_path / "cut")
    kept = tmp_path / "as-the-power-cut-left-it"

    class PowerCutError(Exception):
        pass

    def cut_before_the_flush(folder):
        # What the disk holds if the power goes now: the folder as it stands.
        shutil.copytree(folder, kept)
        raise PowerCutError

    with monkeypatch.context() as patch:
        patch.setattr(store, "flush_tree", cut_before_the_flush)
        with pytest.raises(PowerCutError):
            build_pyramid(zarrurl=root, **scenario.params)
    assert {p.name for p in kept.iterdir()} >= {store.JOURNAL, store.STAGED_METADATA}
    journal = kept / store.JOURNAL
    journal.write_bytes(journal.read_bytes()[: journal.stat().st_size // 2])
    folder = root / f"{store.BUILD_PREFIX}0123456789ab"
    shutil.copytree(kept, folder)
    assert scenario.expected.at(root).check() == "original"

    build_pyramid(zarrurl=root, **scenario.params)
    assert not folder.exists()
    assert tree_snapshot(root) == scenario.after

    # Beside something moved aside, a torn journal may belong to a build that did move it.
    other = scenario.copy(tmp_path / "aside")
    stranger = other / f"{store.BUILD_PREFIX}ba9876543210"
    shutil.copytree(kept, stranger)
    (stranger / "aside" / "0").mkdir(parents=True)
    with pytest.warns(UserWarning, match="no journal of a napari-pyramids build; left alone"):
        build_pyramid(zarrurl=other, **scenario.params)
    assert (stranger / "aside" / "0").is_dir()
