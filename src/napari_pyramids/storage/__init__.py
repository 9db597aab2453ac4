"""Storage: the one seam between the engine and where an image's bytes live.

The engine, the planner and the preview use only what this package exports: a
:class:`Store` (the keys of one image), the level arrays opened on it (whole write units in
and out), and the build transaction (lock, unlisted levels, publish, recovery).

Each name is imported on first use: reading a few keys (``unchanged.py``) needs neither numpy
nor the codecs that the level arrays bring.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes

if TYPE_CHECKING:
    from .arrays import (
        LevelArray,
        check_zarr_reads,
        open_level,
        open_level_array,
        read_sampled,
    )
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

_HOMES = {
    "LevelArray": ".arrays",
    "check_zarr_reads": ".arrays",
    "open_level": ".arrays",
    "open_level_array": ".arrays",
    "read_sampled": ".arrays",
    "BuildTransaction": ".store",
    "ConsolidatedEdit": ".store",
    "ImageChanges": ".store",
    "LocalStore": ".store",
    "NewLevel": ".store",
    "Store": ".store",
    "UrlPath": ".store",
    "encode_json": ".store",
    "open_store": ".store",
}

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
    "read_sampled",
]


__getattr__, __dir__ = lazy_attributes(__name__, _HOMES, globals())
