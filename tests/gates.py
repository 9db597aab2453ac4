"""An executor that holds a build mid-way: blocks written and others pending, at any speed.

A module of its own (not a conftest), so that tests import it by one name whichever
conftest pytest loaded first.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor


class GatedExecutor(ThreadPoolExecutor):
    """Runs the first ``free`` blocks, then holds every other block until ``gate`` is set.

    ``held`` is set when a block starts waiting: the build is then mid-way, with blocks
    written and others pending, whatever the machine's speed.
    """

    def __init__(self, free: int = 1) -> None:
        super().__init__(max_workers=2)
        self.free = free
        self.gate = threading.Event()
        self.held = threading.Event()
        self._submitted = 0
        self._lock = threading.Lock()

    def submit(self, fn, /, *args, **kwargs):
        with self._lock:
            index = self._submitted
            self._submitted += 1

        def run():
            if index >= self.free:
                self.held.set()
                self.gate.wait()
            return fn(*args, **kwargs)

        return super().submit(run)
