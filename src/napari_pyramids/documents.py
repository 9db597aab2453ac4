"""The metadata documents a build publishes: the image's, the group files of new folders, and
every consolidated metadata document that lists the image.

The engine writes levels; this module says what the documents that list them become. The
image's own consolidated metadata is found beside its metadata; groups above the image are
looked for by walking up from it while the folders are zarr groups of the image's format
(at most ``MAX_PARENT_GROUPS``, never out of a link), and each document is read with the
caps of any untrusted metadata.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from .errors import PyramidError
from .ome.consolidated import ImageChange, apply, lists_image, patch_for
from .ome.format import Format
from .ome.image import OmeZarrImage
from .ome.metadata import group_document_with, multiscale_with_levels
from .pyramid.plan import PyramidPlan
from .storage import ConsolidatedEdit, Store, encode_json
from .untrusted import CONSOLIDATED_CAPS, MAX_PARENT_GROUPS


@dataclass(frozen=True)
class GroupFile:
    """A group file a new level's folder needs, and level 0's folder at the same depth."""

    folder: str  # "" for the image group itself
    like: str | None
    name: str
    document: dict[str, Any]

    @property
    def key(self) -> str:
        return f"{self.folder}/{self.name}" if self.folder else self.name


@dataclass(frozen=True)
class Documents:
    """Everything a publish writes besides the levels."""

    intermediate: bytes | None
    final: bytes
    extra_files: list[tuple[str, bytes]]
    consolidated: list[ConsolidatedEdit]


def publish_documents(plan: PyramidPlan, aside: list[str]) -> Documents:
    """The documents of a planned build; call under the image's lock, after recovery."""
    image = plan.image
    # Hide every listed level while levels move: the original metadata may list a path
    # that is about to be replaced, even one missing on disk.
    lists_levels = image.has_multiscales and len(image.level_paths) > 1
    between = intermediate_document(plan) if aside or lists_levels else None
    after = final_document(plan)
    groups = group_files(plan)
    change = ImageChange(
        before=image.group_document,
        between=between,
        after=after,
        level0=plan.levels[0].path,
        level0_document=image.level0.document,
        removed=tuple(
            dict.fromkeys([*plan.replaced, *plan.dropped, *(lv.path for lv in plan.new_levels)])
        ),
        added=tuple((lv.path, lv.document) for lv in plan.new_levels),
        groups=tuple(
            (g.folder, g.like, g.document) for g in groups if not image.store.exists(g.key)
        ),
    )
    fmt = image.format
    edits = []
    for up, name, entries, prefix in consolidated_documents(image, between is not None):
        patch = patch_for(fmt, entries, prefix, change)
        if up == 0 and name == image.metadata_file:
            # A v3 image's own consolidated metadata is inside the document written last.
            if between is not None:
                between = fmt.with_consolidated_entries(between, apply(entries, patch.between))
            after = fmt.with_consolidated_entries(after, apply(entries, patch.after))
        else:
            edits.append(ConsolidatedEdit(up, name, patch))
    return Documents(
        intermediate=None if between is None else encode_json(between),
        final=encode_json(after),
        extra_files=[(g.key, encode_json(g.document)) for g in groups],
        consolidated=edits,
    )


def intermediate_document(plan: PyramidPlan) -> dict[str, Any]:
    """The metadata listing only level 0: what readers see while old levels move aside."""
    image = plan.image
    if not image.has_multiscales:
        return image.group_document
    multiscale = dict(image.multiscale)
    multiscale["datasets"] = [image.multiscale["datasets"][0]]
    return group_document_with(image, multiscale)


def final_document(plan: PyramidPlan) -> dict[str, Any]:
    """The image's metadata document listing every level of the plan."""
    multiscale = multiscale_with_levels(plan.image, plan.datasets(), plan.provenance)
    return group_document_with(plan.image, multiscale)


def group_files(plan: PyramidPlan) -> list[GroupFile]:
    """Group metadata the new levels' folders need: a bare v2 image's ``.zgroup``, and the
    parent groups of nested level paths (``scale1/`` beside ``scale0/``) where level 0 has one.
    """
    image = plan.image
    groups = image.format.group_files()
    files = [GroupFile("", None, name, doc) for name, doc in groups if name != image.metadata_file]
    parents0 = PurePosixPath(image.level0.path).parents[:-1]
    for level in plan.new_levels:
        for parent, parent0 in zip(PurePosixPath(level.path).parents[:-1], parents0, strict=False):
            for name, document in groups:
                entry = GroupFile(str(parent), str(parent0), name, document)
                if image.store.is_file(f"{parent0}/{name}") and entry.key not in {
                    f.key for f in files
                }:
                    files.append(entry)
    return files


def consolidated_documents(
    image: OmeZarrImage, replacing: bool
) -> Iterator[tuple[int, str, dict[str, Any], str]]:
    """(folders up, file, entries, the image's path there) of every consolidated metadata
    document listing the image: its own, then those of the groups above it.

    A group above the image whose documents cannot be read (too big, not JSON) or written
    (a link) ends the walk with a warning: its consolidated metadata, if any, keeps listing
    the levels as they were, which stays true while levels are only added. When the build
    replaces or drops levels (``replacing``), that would have readers find replaced levels
    with their old shapes: the build is refused instead.
    """
    fmt, store = image.format, image.store
    if fmt.consolidated_file == image.metadata_file:
        own = fmt.consolidated_entries(image.group_document)
    else:
        own = _own_entries(store, fmt)
    if own is not None:
        yield 0, fmt.consolidated_file, own, ""
    current, parts = store, []
    for up in range(1, MAX_PARENT_GROUPS + 1):
        parent = current.enclosing()
        if parent is None:
            return
        parts.insert(0, current.name())
        current = parent
        try:
            document = _group_consolidated(parent, fmt)
            entries = fmt.consolidated_entries(document)
            if entries is not None and lists_image(entries, "/".join(parts)):
                parent.check_write_target(fmt.consolidated_file, "consolidated metadata", False)
        except PyramidError as exc:
            fix = f"fix it, then run zarr.consolidate_metadata({parent.describe()!r})"
            if replacing:
                raise PyramidError(
                    f"{exc}; its consolidated metadata, if any, may list the levels this build "
                    f"replaces and cannot be updated: {fix}, or build without overwrite. "
                    "Nothing was written."
                ) from None
            warnings.warn(
                f"{exc}; so the consolidated metadata there, if any, is not updated for "
                f"{image.root}: {fix}.",
                stacklevel=3,
            )
            return
        if document is None:
            return
        if entries is not None and lists_image(entries, "/".join(parts)):
            yield up, fmt.consolidated_file, entries, "/".join(parts)


def _own_entries(store: Store, fmt: Format) -> dict[str, Any] | None:
    """The entries of a v2 image's ``.zmetadata``, if it has one (it must be readable)."""
    try:
        document = store.read_json(
            fmt.consolidated_file, "consolidated metadata", **CONSOLIDATED_CAPS
        )
    except PyramidError as exc:
        raise PyramidError(
            f"{exc}. Readers trust this file over the image's metadata: fix it, or remove it "
            "(or re-create it with zarr.consolidate_metadata), then run again. Nothing was "
            "written."
        ) from None
    if document is None:
        return None
    entries = fmt.consolidated_entries(document)
    if entries is None:
        raise PyramidError(
            f"{store.describe(fmt.consolidated_file)} is not consolidated metadata (no "
            "'metadata' object); remove it or re-create it with zarr.consolidate_metadata, "
            "then run again. Nothing was written."
        )
    return entries


def _group_consolidated(store: Store, fmt: Format) -> Any:
    """A group's consolidated metadata document ({} if none), or None if the folder is not
    a zarr group of the image's format (which ends the walk up)."""
    if fmt.zarr_format == 3:
        # A v3 group's consolidated metadata is inside its group document.
        document = store.read_json("zarr.json", "group metadata", **CONSOLIDATED_CAPS)
    else:
        document = store.read_json(".zgroup", "group metadata")
    if not isinstance(document, dict) or document.get("zarr_format") != fmt.zarr_format:
        return None
    if fmt.zarr_format == 3:
        return document if document.get("node_type") == "group" else None
    return store.read_json(".zmetadata", "consolidated metadata", **CONSOLIDATED_CAPS) or {}
