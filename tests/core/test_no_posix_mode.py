"""The no-POSIX mode really removes what it claims, here and in the processes builds run in.

These tests only run in that mode (``NAPARI_PYRAMIDS_NO_POSIX=1``); there they check that the
package imports and picks its portable code paths, so the rest of the suite, run in the same
mode, exercises what Windows (and macOS) users run.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    os.environ.get("NAPARI_PYRAMIDS_NO_POSIX") != "1",
    reason="runs in the no-POSIX mode only (NAPARI_PYRAMIDS_NO_POSIX=1)",
)

PROBE = """
import os, sys
for name in ("O_NOFOLLOW", "O_DIRECTORY", "sched_getaffinity", "sync"):
    if hasattr(os, name):
        print("os." + name + " present")
import napari_pyramids._napari.reader, napari_pyramids._napari.writer
import napari_pyramids.storage.localfs as localfs
print("os lock" if localfs.has_os_lock() else "lease")
import fcntl  # others may: on Windows they would take their msvcrt branch
print("fcntl for others")
"""


def test_facilities_are_gone_in_this_process():
    from napari_pyramids.storage import localfs

    assert not localfs.has_os_lock()
    for name in ("O_NOFOLLOW", "O_DIRECTORY", "sched_getaffinity", "sync"):
        assert not hasattr(os, name), name


def test_child_processes_run_without_them_and_the_package_imports():
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=120
    )
    lines = result.stdout.splitlines()
    assert lines == ["lease", "fcntl for others"], result.stdout + result.stderr
