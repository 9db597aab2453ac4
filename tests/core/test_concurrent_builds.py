"""One build per image at a time, and readers never see a half-published image.

A first build runs in a child process that pauses before every filesystem change its store
makes. At each pause this process (a second process) reads the image as any reader would,
and starts the same build itself: it must be refused with ImageBusyError, naming the first
build's pid, without writing anything, while the first then completes untouched.
"""

from __future__ import annotations

import numpy as np
import pytest

from faultkit import child_hold_lock, hidden_leftovers, prepare, start, start_build
from imaging import tree_snapshot
from napari_pyramids.api import build_pyramid
from napari_pyramids.errors import ImageBusyError

CONFIGS = [
    pytest.param(2, False, id="v2"),
    pytest.param(3, True, id="v3-overwrite"),
]


def small_scenario(tmp_path, zarr_format, overwrite):
    data = np.random.default_rng(3).integers(1, 4096, size=(2, 64, 48), dtype=np.uint16)
    return prepare(
        tmp_path,
        data,
        zarr_format=zarr_format,
        chunks=(1, 32, 32),
        overwrite=overwrite,
        num_levels=3,
    )


@pytest.mark.parametrize(("zarr_format", "overwrite"), CONFIGS)
def test_second_build_is_refused_at_every_step_of_the_first(tmp_path, zarr_format, overwrite):
    scenario = small_scenario(tmp_path, zarr_format, overwrite)
    root = scenario.copy(tmp_path / "image")
    first = start_build(root, scenario.params, pause_at="all")
    pid = first.process.pid
    refused = 0
    while (message := first.wait_for(("paused", "end", "error")))[0] == "paused":
        _, step, what = message
        scenario.expected.at(root).check()
        if step > 1:  # step 1 creates the lock file: from step 2 on the first build holds it
            snapshot = tree_snapshot(root)
            with pytest.raises(ImageBusyError) as refusal:
                build_pyramid(zarrurl=root, **scenario.params)
            assert tree_snapshot(root) == snapshot, f"the refused build wrote ({what})"
            text = str(refusal.value)
            assert "\n" not in text
            assert "being built by another process" in text
            if step > 3:  # after the holder wrote its name into the lock file
                assert f"pid {pid} " in text
            refused += 1
        first.conn.send("go")
    assert message[0] == "end"
    first.process.join(30)
    assert refused > 10
    assert tree_snapshot(root) == scenario.after
    # Every version a reader met was whole; it met the old and the new one.
    assert {"original", "final"} <= set(scenario.expected.seen)


def test_lock_of_a_killed_holder_does_not_block_the_next_build(tmp_path):
    scenario = small_scenario(tmp_path, 3, False)
    root = scenario.copy(tmp_path / "image")
    holder = start(child_hold_lock, str(root))
    _, pid = holder.wait_for(("locked",))
    with pytest.raises(ImageBusyError, match=f"pid {pid} "):
        build_pyramid(zarrurl=root, **scenario.params)
    holder.kill()
    assert hidden_leftovers(root) == [".napari-pyramids.lock"]
    build_pyramid(zarrurl=root, **scenario.params)
    assert tree_snapshot(root) == scenario.after


@pytest.mark.parametrize(("zarr_format", "overwrite"), CONFIGS)
def test_two_builds_started_together_give_one_pyramid(tmp_path, zarr_format, overwrite):
    scenario = small_scenario(tmp_path, zarr_format, overwrite)
    for round_ in range(3):
        root = scenario.copy(tmp_path / f"race{round_}")
        children = [start_build(root, scenario.params) for _ in range(2)]
        outcomes = sorted(_outcome(child) for child in children)
        assert "built" in outcomes, outcomes
        for outcome in outcomes:
            # The loser is refused while the winner runs, or finds the levels built.
            assert outcome in ("built", "ImageBusyError", "built" if overwrite else "exists")
        assert tree_snapshot(root) == scenario.after


def _outcome(child) -> str:
    message = child.finish()
    if message[0] == "end":
        return "built"
    assert message[0] == "error", message
    _, kind, text = message
    if kind == "LevelExistsError":
        assert "already exists" in text
        return "exists"
    return kind
