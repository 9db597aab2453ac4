"""Check a tool's pyramid against the straightforward per-level numpy computation.

Each level k is the mean of the 2x2 YX windows of level k-1, computed here plane by plane
with a reshape and an exact integer sum. Three roundings of that mean are tried, each level
built from the previous level rounded the same way (as every tool stores level k-1 and
derives level k from it): to nearest with ties to even (napari-pyramids' documented rule),
to nearest with ties up, and truncation (numpy ``astype``, the seed's cast).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import zarr

ROUNDINGS = ("nearest, ties to even", "nearest, ties up", "truncated")


def reference_level(plane: np.ndarray, rounding: str) -> np.ndarray:
    """One level down: the mean of each whole 2x2 window of a uint plane."""
    h, w = plane.shape[0] // 2 * 2, plane.shape[1] // 2 * 2
    total = plane[:h, :w].reshape(h // 2, 2, w // 2, 2).sum(axis=(1, 3), dtype=np.uint64)
    quotient, remainder = np.divmod(total, 4)
    if rounding == "nearest, ties to even":
        quotient += (2 * remainder > 4) | ((2 * remainder == 4) & (quotient % 2 == 1))
    elif rounding == "nearest, ties up":
        quotient += 2 * remainder >= 4
    return quotient.astype(plane.dtype)


def compare_pyramid(source: Path, output: Path, levels: int) -> dict:
    """Which rounding of the reference the output equals exactly, or how much it differs.

    Roundings are tried in order and a rounding is dropped at its first differing plane,
    so an exact output costs one pass; only an output matching none is counted in full.
    """
    level0 = zarr.open_array(source / "0", mode="r")
    try:
        outputs = [zarr.open_array(output / str(k), mode="r") for k in range(1, levels)]
    except Exception as exc:  # a tool that wrote nothing readable
        return {"summary": f"unreadable output: {exc}"}
    shapes = [tuple(a.shape) for a in outputs]
    total = sum(int(np.prod(s)) for s in shapes)
    result = {
        "voxels": total,
        "shapes": shapes,
        "level1_chunks": list(outputs[0].chunks),
        "level1_codecs": [str(c) for c in outputs[0].compressors],
    }
    for rounding in ROUNDINGS:
        differing, worst = _differences(level0, outputs, rounding, stop_early=True)
        if differing == 0:
            if rounding == ROUNDINGS[0]:
                return {**result, "summary": "identical"}
            return {**result, "summary": f"identical to the mean rounded {rounding}"}
    differing, worst = _differences(level0, outputs, ROUNDINGS[0], stop_early=False)
    summary = f"{100 * differing / total:.1f}% of voxels differ (max {worst})"
    return {**result, "summary": summary, "differing": differing, "max_abs_diff": worst}


def _differences(level0, outputs, rounding: str, stop_early: bool) -> tuple[int, int]:
    """Voxels of every output level that differ from the reference, and the largest gap."""
    differing, worst = 0, 0
    for index in itertools.product(*(range(n) for n in level0.shape[:-2])):
        ref = level0[index]
        for array in outputs:
            ref = reference_level(ref, rounding)
            got = array[index]
            if got.shape != ref.shape:
                return got.size, -1
            delta = np.abs(got.astype(np.int64) - ref.astype(np.int64))
            differing += int(np.count_nonzero(delta))
            worst = max(worst, int(delta.max()))
        if stop_early and differing:
            break
    return differing, worst
