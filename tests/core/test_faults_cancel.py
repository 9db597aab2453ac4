"""Cancel, close or fail a build at any moment: the image is byte-identical to before.

Within one process every interruption is cleaned up on the spot, so the whole tree (every
file below the image's parent) must hash exactly as before the build, or exactly as a clean
build leaves it when the interruption came after the build had finished. The same call run
again then completes.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from faultkit import (
    SCENARIO_CONFIGS,
    Scenario,
    Steps,
    StepSchedule,
    hidden_leftovers,
    prepare,
    rerun_completes,
)
from imaging import tree_snapshot
from napari_pyramids.api import build_pyramid
from napari_pyramids.engine import iter_build
from napari_pyramids.errors import BuildCancelled
from napari_pyramids.storage import transaction as store

# A budget for 64 workers cuts this image into 9 blocks over two passes; two threads run them.
PARAMS = {"num_levels": 4, "memory_budget": "16MiB", "workers": 64}


@pytest.fixture(scope="module")
def pool():
    with ThreadPoolExecutor(2) as executor:
        yield executor


@pytest.fixture(scope="module", params=SCENARIO_CONFIGS)
def scenario(request, tmp_path_factory, pool) -> Scenario:
    zarr_format, overwrite = request.param
    rng = np.random.default_rng(5)
    data = rng.integers(1, 4096, size=(3, 256, 192), dtype=np.uint16)
    scenario = prepare(
        tmp_path_factory.mktemp("cancel"),
        data,
        zarr_format=zarr_format,
        chunks=(1, 32, 32),
        overwrite=overwrite,
        num_levels=4,
    )
    scenario.params.update(PARAMS, executor=pool)
    return scenario


def blocks_of(scenario: Scenario, root) -> int:
    progress = iter_build(root, **scenario.params)
    first = next(progress)
    progress.close()
    assert tree_snapshot(root) == scenario.before
    return first.total


def test_cancel_callable_after_every_block_count(scenario, tmp_path):
    root = scenario.copy(tmp_path / "work")
    total = blocks_of(scenario, root)
    assert total >= 8, "the build should have many blocks"
    for stop_after in range(total + 1):
        calls = 0

        def cancel(stop_after=stop_after) -> bool:
            nonlocal calls
            calls += 1
            return calls > stop_after

        with pytest.raises(BuildCancelled, match="unchanged"):
            build_pyramid(zarrurl=root, cancel=cancel, **scenario.params)
        assert tree_snapshot(root) == scenario.before, f"cancel after {stop_after} blocks"
    rerun_completes(scenario, root)


def test_cancel_event_set_from_another_thread_at_random_moments(scenario, tmp_path, rng):
    root = scenario.copy(tmp_path / "work")
    cancelled = finished = 0
    for trial in range(6):
        event = threading.Event()
        timer = threading.Timer(float(rng.uniform(0, 0.3)), event.set)
        timer.start()
        try:
            build_pyramid(zarrurl=root, cancel=event, **scenario.params)
        except BuildCancelled:
            cancelled += 1
            assert tree_snapshot(root) == scenario.before, f"trial {trial}"
        else:
            # The event came after the last block: the build is whole. Start again.
            finished += 1
            assert tree_snapshot(root) == scenario.after
            root = scenario.copy(tmp_path / f"work{trial}")
        finally:
            timer.cancel()
    assert cancelled + finished == 6
    rerun_completes(scenario, root)


def test_closing_iter_build_after_every_step(scenario, tmp_path):
    root = scenario.copy(tmp_path / "work")
    steps = list(iter_build(scenario.copy(tmp_path / "count"), **scenario.params))
    assert [s.phase for s in steps[-2:]] == ["publishing", "done"]
    # Steps inside blocks depend on how the threads interleave: each run may count a few
    # more or fewer, so take one more each round until a run reaches its end.
    for taken in itertools.count(1):
        progress = iter_build(root, **scenario.params)
        last = list(itertools.islice(progress, taken))[-1]
        progress.close()
        if last.phase == "done":
            assert tree_snapshot(root) == scenario.after
            break
        assert tree_snapshot(root) == scenario.before, f"closed after {last}"
    assert taken >= len(steps) // 2
    # The last round ran to the end: closing after "done" leaves the whole pyramid.
    assert last.phase == "done"
    assert hidden_leftovers(root) == []


def test_ctrl_c_at_every_store_step_restores_the_image(scenario, tmp_path):
    # OSErrors at every step: test_faults_storage.test_no_space_at_every_store_step.
    error = KeyboardInterrupt()
    counter = Steps()
    with counter.installed(store):
        build_pyramid(zarrurl=scenario.copy(tmp_path / "count"), **scenario.params)
    root = scenario.copy(tmp_path / "work")
    outcomes = {"restored": 0, "built": 0}
    schedule = StepSchedule(counter.count)
    for step in schedule:
        failing = Steps(fail_at=step, error=error)
        with failing.installed(store), contextlib.suppress(KeyboardInterrupt):
            build_pyramid(zarrurl=root, **scenario.params)
        snapshot = tree_snapshot(root)
        if snapshot == scenario.before:
            assert not outcomes["built"], f"step {step} undid a committed build"
            outcomes["restored"] += 1
            continue
        # Only an error after the metadata was committed may leave the new pyramid, and
        # then at worst with leftovers that the next build removes.
        diff = sorted(set(snapshot.items()) ^ set(scenario.before.items()))
        assert scenario.expected.at(root).check() == "final", f"step {step}: {diff}"
        outcomes["built"] += 1
        schedule.committed(step)
        rerun_completes(scenario, root)
        root = scenario.copy(tmp_path / f"work{step}")
    assert outcomes["restored"] > 0
    assert outcomes["built"] > 0


def test_failing_block_leaves_the_image_unchanged(scenario, tmp_path):
    root = scenario.copy(tmp_path / "work")
    total = blocks_of(scenario, root)
    for fail_on in (0, total // 2, total - 1):
        calls = 0

        def aggregate(window, axis, fail_on=fail_on):
            nonlocal calls
            calls += 1
            if calls > fail_on:
                raise RuntimeError("reducer exploded")
            return np.max(window, axis=axis)

        params = dict(scenario.params, aggregation_function=aggregate)
        with pytest.raises(Exception, match="reducer exploded"):
            build_pyramid(zarrurl=root, **params)
        assert tree_snapshot(root) == scenario.before
    rerun_completes(scenario, root)
