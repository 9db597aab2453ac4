"""What differs between the operating systems napari runs on, outside storage: one function each.

Storage's differences (locks, directory flushes, links) live in
:mod:`napari_pyramids.storage.localfs`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading

# How much lower than napari the preview's threads run (nice values, 0 to 19).
THREAD_NICENESS = 10


def cpu_count() -> int:
    """The CPUs this process may run on.

    Linux restricts a process to a set of CPUs (containers, ``taskset``, batch schedulers), and
    ``sched_getaffinity`` says which; macOS and Windows have no such call, and there every CPU
    counts. Python 3.13's ``os.process_cpu_count`` does the same, where it exists.
    """
    process_cpu_count = getattr(os, "process_cpu_count", None)
    if process_cpu_count is not None:
        return max(1, process_cpu_count() or 1)
    affinity = getattr(os, "sched_getaffinity", None)
    if affinity is not None:
        return max(1, len(affinity(0)))
    return max(1, os.cpu_count() or 1)


def lower_thread_priority() -> None:
    """Make the calling thread yield the CPU to napari's (and other programs') threads.

    Linux schedules threads on their own and takes a thread id for ``setpriority``; on macOS
    and Windows the same call would lower the whole process (napari included), so there the
    thread keeps its priority.
    """
    if not sys.platform.startswith("linux"):
        return
    # Not permitted or not supported: the thread runs as before.
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), THREAD_NICENESS)
