"""Shared fixtures. GUI tests live in tests/qt and need an X display (xvfb-run)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261125)
