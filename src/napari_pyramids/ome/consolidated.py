"""Consolidated metadata: the copy of a hierarchy's metadata that many readers trust alone.

zarr-python's ``consolidate_metadata`` (which ngff-zarr calls by default) copies the
metadata of every node below a group into one document of that group: ``.zmetadata`` in
zarr v2, the ``consolidated_metadata`` member of ``zarr.json`` in zarr v3. A reader that
finds it reads nothing else, so a build that adds levels without updating it leaves them
invisible (``KeyError``), and one that replaces levels would have them read with the old
levels' shapes. An image can be consolidated at its own group and at groups above it (a
plate, a bioformats2raw collection, an image holding its labels).

This module says what such a document must hold after a build, as a :class:`Patch` of the
entries the build changes: the level-0-only state while old levels move aside, the final
state, and what those entries held before (to undo). Where to find the documents and how
to write them safely is the storage's and the engine's business.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .format import Format

# Entry key -> the entry (a metadata document), or None to remove the key.
Entries = dict[str, Any]


@dataclass(frozen=True)
class ImageChange:
    """What a build changes in an image, in terms of metadata documents.

    ``before``/``between``/``after`` are the image group's document (a v2 image's
    ``.zattrs``, a v3 image's ``zarr.json``) as read, while levels move (listing level 0
    alone; None when not written) and once published. ``removed`` are level paths whose
    arrays go (replaced or dropped, even if missing on disk); ``added`` the new levels and
    their array documents, all made from level 0's; ``groups`` the group folders the
    build creates for nested level paths, each with the level-0 folder at the same depth
    whose entries it imitates (None: none) and its group document.
    """

    before: dict[str, Any]
    between: dict[str, Any] | None
    after: dict[str, Any]
    level0: str
    level0_document: dict[str, Any]
    removed: tuple[str, ...]
    added: tuple[tuple[str, dict[str, Any]], ...]
    groups: tuple[tuple[str, str | None, dict[str, Any]], ...]


@dataclass(frozen=True)
class Patch:
    """The entries a build changes in one consolidated document, in each of its states."""

    between: Entries | None
    after: Entries
    before: Entries

    def to_json(self) -> dict[str, Any]:
        return {"between": self.between, "after": self.after, "before": self.before}


def patch_for(fmt: Format, entries: Mapping[str, Any], prefix: str, change: ImageChange) -> Patch:
    """How a consolidated document whose entries are ``entries`` changes with the build.

    ``prefix`` is the image group's path below the document's group ("" for the image's
    own). Entries of level 0, and of anything that is not a level the build replaces or
    drops, are left as they are.
    """

    def node(path: str) -> str:
        return join(prefix, path)

    level0 = node(change.level0)
    removed = [node(p) for p in change.removed]
    gone: Entries = {
        key: None
        for key in entries
        if is_below(key, prefix)
        and any(is_below(key, n) for n in removed)
        and not is_below(key, level0)
    }
    entries = dict(entries)
    between = None
    if change.between is not None:
        between = {**gone, **fmt.group_entries(prefix, entries, change.before, change.between)}
    after = dict(gone)
    after.update(fmt.group_entries(prefix, entries, change.before, change.after))
    for folder, like, document in change.groups:
        template = None if like is None else node(like)
        after.update(fmt.new_group_entries(node(folder), template, entries, document))
    for path, document in change.added:
        after.update(
            fmt.array_entries(node(path), level0, entries, change.level0_document, document)
        )
    keys = [*after, *(k for k in between or {} if k not in after)]
    return Patch(between, after, {key: entries.get(key) for key in keys})


def lists_image(entries: Mapping[str, Any], prefix: str) -> bool:
    """Whether a consolidated document lists anything of the image group at ``prefix``."""
    return any(is_below(key, prefix) for key in entries)


def apply(entries: Mapping[str, Any], patch: Mapping[str, Any]) -> Entries:
    """``entries`` with the patch's keys set (or removed where the patch says None)."""
    result = dict(entries)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    return result


def is_below(key: str, node: str) -> bool:
    """Whether an entry key names ``node`` or something inside it (``node`` "" is the root)."""
    return not node or key == node or key.startswith(node + "/")


def join(prefix: str, path: str) -> str:
    """A node's key below the document's group (``path`` "" is the image group itself)."""
    return "/".join(p for p in (prefix, path) if p)
