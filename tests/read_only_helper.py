"""A really read-only image for tests, whether they run as root or not."""

from __future__ import annotations

import contextlib
import os
import subprocess

import pytest


@contextlib.contextmanager
def read_only(root):
    """Make ``root`` really read-only, for root too (immutable flag) or by permissions."""
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(root)], capture_output=True).returncode:
            pytest.skip("running as root on a filesystem without the immutable flag")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(root)], check=True)
    else:
        modes = {p: p.stat().st_mode for p in [root, *root.rglob("*")]}
        for path in modes:
            path.chmod(modes[path] & ~0o222)
        try:
            yield
        finally:
            for path, mode in modes.items():
                path.chmod(mode)
