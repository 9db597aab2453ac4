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
    """Per rounding, the voxels of levels 1..levels-1 that differ from it, and the layout."""
    level0 = zarr.open_array(source / "0", mode="r")
    try:
        outputs = [zarr.open_array(output / str(k), mode="r") for k in range(1, levels)]
    except Exception as exc:  # a tool that wrote nothing readable
        return {"summary": f"unreadable output: {exc}"}
    shapes = [tuple(a.shape) for a in outputs]
    diffs = {r: 0 for r in ROUNDINGS}
    worst = {r: 0 for r in ROUNDINGS}
    total = sum(int(np.prod(s)) for s in shapes)
    for index in itertools.product(*(range(n) for n in level0.shape[:-2])):
        plane = level0[index]
        for rounding in ROUNDINGS:
            ref = plane
            for array in outputs:
                ref = reference_level(ref, rounding)
                got = array[index]
                if got.shape != ref.shape:
                    return {"summary": f"wrong shape {array.shape}", "shapes": shapes}
                delta = np.abs(got.astype(np.int64) - ref.astype(np.int64))
                diffs[rounding] += int(np.count_nonzero(delta))
                worst[rounding] = max(worst[rounding], int(delta.max()))
    exact = [r for r in ROUNDINGS if diffs[r] == 0]
    if exact and exact[0] == ROUNDINGS[0]:
        summary = "identical"
    elif exact:
        summary = f"identical to the mean rounded {exact[0]}"
    else:
        r = ROUNDINGS[0]
        summary = f"{100 * diffs[r] / total:.1f}% of voxels differ (max {worst[r]})"
    first = outputs[0]
    return {
        "summary": summary,
        "voxels": total,
        "differing": diffs,
        "max_abs_diff": worst,
        "shapes": shapes,
        "level1_chunks": list(first.chunks),
        "level1_codecs": [str(c) for c in first.compressors],
    }
