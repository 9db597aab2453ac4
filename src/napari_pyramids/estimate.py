"""How much disk a build needs, estimated from how well level 0 compresses.

New levels reuse level 0's codecs and hold coarser views of the same data, so level 0's
stored-to-raw ratio, measured on a sample of its chunk files, predicts their size well
enough to warn before a build fills a disk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .ome.image import OmeZarrImage
from .pyramid.plan import PyramidPlan
from .untrusted import ZARR_METADATA_NAMES

# Listing every chunk of a big level 0 would take longer than the estimate is worth.
MAX_SAMPLED_FILES = 4096


@dataclass(frozen=True)
class DiskEstimate:
    """Bytes the new levels will take on disk, and what the estimate rests on."""

    raw_bytes: int
    stored_bytes: int
    ratio: float | None
    free_bytes: int | None

    @property
    def fits(self) -> bool:
        """Whether the free space (if known) exceeds the estimate."""
        return self.free_bytes is None or self.stored_bytes < self.free_bytes


def compression_ratio(image: OmeZarrImage, max_files: int = MAX_SAMPLED_FILES) -> float | None:
    """Stored bytes over raw bytes of level 0's chunk (or shard) files, from a sample.

    Returns None when level 0 has no chunk file yet (all fill value). Links are not
    followed, so a crafted image cannot send the walk elsewhere.
    """
    unit = image.level0.shards or image.level0.chunks
    unit_bytes = math.prod(unit) * image.level0.dtype.itemsize
    stored, count = 0, 0
    for key, size in image.store.objects(image.level0.path):
        if key.rsplit("/", 1)[-1] in ZARR_METADATA_NAMES:
            continue
        stored += size
        count += 1
        if count >= max_files:
            return stored / (count * unit_bytes)
    return stored / (count * unit_bytes) if count else None


def disk_estimate(plan: PyramidPlan, ratio: float | None = None) -> DiskEstimate:
    """Raw and estimated stored bytes of the plan's new levels, and the free space.

    Each level is counted in whole chunks (shards), as zarr stores edge chunks whole.
    ``ratio`` defaults to :func:`compression_ratio` of level 0 (1.0 if it cannot be measured).
    """
    if ratio is None:
        ratio = compression_ratio(plan.image)
    raw = 0
    for level in plan.new_levels:
        unit = level.shards or level.chunks
        units = math.prod(-(-n // u) for n, u in zip(level.shape, unit, strict=True))
        raw += units * math.prod(unit) * level.itemsize
    stored = int(raw * (ratio if ratio is not None else 1.0))
    return DiskEstimate(raw, stored, ratio, plan.image.store.free_bytes())
