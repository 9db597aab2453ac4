"""Check a tool's pyramid against the straightforward per-level numpy computation.

Each level k is the mean of the 2x2 YX windows of level k-1, computed here plane by plane
with a reshape and an exact integer sum. Three roundings of that mean are tried, each level
built from the previous level rounded the same way (as most tools store level k-1 and
derive level k from it): to nearest with ties to even (napari-pyramids' documented rule),
to nearest with ties up, and truncation (numpy ``astype``, the seed's cast). A tool that
derives every level from level 0 instead (the mean of each 2^k x 2^k window, rounded once)
is matched by the same three roundings of that direct mean.

Every output level is opened with zarr-python (its default codec pipeline), so a match also
says that zarr-python reads what the tool wrote.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import zarr

ROUNDINGS = ("nearest, ties to even", "nearest, ties up", "truncated")
# How each level is derived: from the previous level, or from level 0 directly.
DERIVATIONS = ("cascade", "from level 0")


def reference_level(plane: np.ndarray, rounding: str, factor: int = 2) -> np.ndarray:
    """One level down: the mean of each whole ``factor`` x ``factor`` window of a uint plane."""
    f = factor
    h, w = plane.shape[0] // f * f, plane.shape[1] // f * f
    total = plane[:h, :w].reshape(h // f, f, w // f, f).sum(axis=(1, 3), dtype=np.uint64)
    n = f * f
    quotient, remainder = np.divmod(total, n)
    if rounding == "nearest, ties to even":
        quotient += (2 * remainder > n) | ((2 * remainder == n) & (quotient % 2 == 1))
    elif rounding == "nearest, ties up":
        quotient += 2 * remainder >= n
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
        return {"summary": f"unreadable by zarr-python: {exc}"}
    shapes = [tuple(a.shape) for a in outputs]
    total = sum(int(np.prod(s)) for s in shapes)
    result = {
        "voxels": total,
        "shapes": shapes,
        "level1_chunks": list(outputs[0].chunks),
        "level1_shards": list(outputs[0].shards) if outputs[0].shards else None,
        "level1_codecs": [str(c) for c in outputs[0].compressors],
        "levels_in_multiscales": _listed_levels(output),
    }
    try:
        for derivation, rounding in itertools.product(DERIVATIONS, ROUNDINGS):
            differing, _ = _differences(level0, outputs, rounding, derivation, stop_early=True)
            if differing == 0:
                return {**result, "summary": _describe(derivation, rounding)}
        differing, worst = _differences(level0, outputs, ROUNDINGS[0], DERIVATIONS[0], False)
    except Exception as exc:  # metadata zarr-python opens, chunks it cannot decode
        return {**result, "summary": f"unreadable by zarr-python: {exc}"}
    summary = f"{100 * differing / total:.1f}% of voxels differ (max {worst})"
    return {**result, "summary": summary, "differing": differing, "max_abs_diff": worst}


def _describe(derivation: str, rounding: str) -> str:
    if derivation == DERIVATIONS[0]:
        if rounding == ROUNDINGS[0]:
            return "identical"
        return f"identical to the mean rounded {rounding}"
    return f"identical to the mean of level 0 rounded {rounding}"


def _listed_levels(output: Path) -> list[str]:
    """Level paths the image's NGFF multiscales metadata lists (a tool may not update it)."""
    try:
        attrs = zarr.open_group(output, mode="r").attrs.asdict()
    except Exception:
        return []
    multiscales = attrs.get("ome", attrs).get("multiscales") or [{}]
    return [d.get("path") for d in multiscales[0].get("datasets", [])]


def _differences(
    level0, outputs, rounding: str, derivation: str, stop_early: bool
) -> tuple[int, int]:
    """Voxels of every output level that differ from the reference, and the largest gap."""
    differing, worst = 0, 0
    for index in itertools.product(*(range(n) for n in level0.shape[:-2])):
        base = ref = level0[index]
        for k, array in enumerate(outputs, start=1):
            if derivation == DERIVATIONS[0]:
                ref = reference_level(ref, rounding)
            else:
                ref = reference_level(base, rounding, factor=2**k)
            got = array[index]
            if got.shape != ref.shape:
                return got.size, -1
            delta = np.abs(got.astype(np.int64) - ref.astype(np.int64))
            differing += int(np.count_nonzero(delta))
            worst = max(worst, int(delta.max()))
        if stop_early and differing:
            break
    return differing, worst
