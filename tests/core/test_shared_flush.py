"""Threads flushing one filesystem at once share the flushes, and none returns before a
flush that started after it asked (storage/localfs.py ``_SharedFlush``)."""

from __future__ import annotations

import itertools
import threading
import time

from napari_pyramids.storage.localfs import _SharedFlush


def _run_threads(shared: _SharedFlush, callers: int, fail_first: bool = False):
    clock = itertools.count()
    lock = threading.Lock()
    runs: list[tuple[int, int, bool]] = []  # (start, end, ok) of every flush
    calls: list[tuple[int, int, bool]] = []  # (asked, returned, result) of every caller
    start = threading.Barrier(callers)

    def tick() -> int:
        with lock:
            return next(clock)

    def run() -> bool:
        begun = tick()
        time.sleep(0.02)
        ok = not (fail_first and not runs)
        runs.append((begun, tick(), ok))
        return ok

    def caller() -> None:
        start.wait()
        asked = tick()
        result = shared.flush(run)
        calls.append((asked, tick(), result))

    threads = [threading.Thread(target=caller) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return runs, calls


def test_every_caller_returns_after_a_flush_that_started_after_it_asked():
    runs, calls = _run_threads(_SharedFlush(), callers=12)
    assert len(calls) == 12
    assert all(result for _, _, result in calls)
    # Never two flushes at once.
    for (_, end, _), (start, _, _) in itertools.pairwise(runs):
        assert end < start
    for asked, returned, _ in calls:
        assert any(asked < start and end < returned and ok for start, end, ok in runs)
    # Twelve callers at once: the first flush covers one or a few, the next covers the rest.
    assert len(runs) < 12


def test_a_failed_flush_is_reported_to_its_caller_and_the_others_flush_again():
    runs, calls = _run_threads(_SharedFlush(), callers=6, fail_first=True)
    assert not runs[0][2]
    assert sum(not result for _, _, result in calls) == 1
    for asked, returned, result in calls:
        if result:
            assert any(asked < start and end < returned and ok for start, end, ok in runs)
