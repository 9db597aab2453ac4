"""The no-POSIX test mode: remove what Windows lacks, before anything is imported.

With ``NAPARI_PYRAMIDS_NO_POSIX=1`` in the environment, every Python process that has this
folder on ``PYTHONPATH`` (the test run, and the build processes the fault tests start and
kill) runs as if on a system without POSIX-only facilities: ``os.O_NOFOLLOW``,
``os.O_DIRECTORY``, ``os.sched_getaffinity`` and ``os.sync`` do not exist, and ``fcntl``
cannot be imported by napari_pyramids. Other packages keep their ``fcntl``: on Windows they
take their own ``msvcrt`` branch, which Linux lacks (dask.distributed's file locks, say).
CI runs only on Linux; this is how the Windows (and part of the macOS) code paths run there.
``tests/conftest.py`` puts this folder on ``PYTHONPATH`` when the variable is set.
"""

from __future__ import annotations

import builtins
import os

BLOCKED_MODULES = ("fcntl",)
REMOVED_OS_NAMES = ("O_NOFOLLOW", "O_DIRECTORY", "sched_getaffinity", "sync")
PACKAGE = "napari_pyramids"


def remove_posix_facilities() -> None:
    for name in REMOVED_OS_NAMES:
        if hasattr(os, name):
            delattr(os, name)
    if getattr(builtins.__import__, "no_posix", False):
        return
    original = builtins.__import__

    def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
        importer = (globals or {}).get("__name__") or ""
        if level == 0 and name in BLOCKED_MODULES and importer.split(".")[0] == PACKAGE:
            raise ModuleNotFoundError(f"No module named {name!r} (no-POSIX test mode)", name=name)
        return original(name, globals, locals, fromlist, level)

    guarded_import.no_posix = True  # type: ignore[attr-defined]
    builtins.__import__ = guarded_import


if os.environ.get("NAPARI_PYRAMIDS_NO_POSIX") == "1":
    remove_posix_facilities()
