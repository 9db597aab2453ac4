"""Storage: the one seam between the engine and where an image's bytes live.

The engine, the planner and the preview use only what this package exports: a
:class:`Store` (the keys of one image), the level arrays opened on it (whole write units in
and out), and the build transaction (lock, unlisted levels, publish, recovery).
"""

from .arrays import LevelArray, check_zarr_reads, open_level, open_level_array
from .store import (
    BuildTransaction,
    ConsolidatedEdit,
    ImageChanges,
    LocalStore,
    NewLevel,
    Store,
    UrlPath,
    encode_json,
    open_store,
)

__all__ = [
    "BuildTransaction",
    "ConsolidatedEdit",
    "ImageChanges",
    "LevelArray",
    "LocalStore",
    "NewLevel",
    "Store",
    "UrlPath",
    "check_zarr_reads",
    "encode_json",
    "open_level",
    "open_level_array",
    "open_store",
]
