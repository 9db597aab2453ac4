"""Paths and JSON that come from strangers: checked before they steer a read or a write.

An OME-Zarr image's metadata names the arrays it holds. Those names are input: a crafted
``"path": "../../etc"`` or a level folder that is a symbolic link must never make a build
write outside the image group. Everything here raises :class:`PyramidError` naming the
offending entry and what to do about it.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Any

from .errors import PyramidError

# A metadata document bigger than this is not an OME-Zarr attribute file but an attack or
# an accident; reading it whole would defeat the memory budget.
MAX_JSON_BYTES = 16 * 1024 * 1024
# Parsed JSON costs up to ~70 bytes per list or object and ~30 per value (measured with
# tracemalloc: 16 MiB of "[]," is 400 MiB of lists, and each deep copy doubles it). These
# caps keep any accepted document under ~100 MiB of Python objects; real metadata, even
# label tables with 100 000 entries, stays far below them.
MAX_JSON_VALUES = 2_000_000
MAX_JSON_CONTAINERS = 250_000
# Real zarr/NGFF documents nest about ten levels; copying and re-encoding recurse per level.
MAX_JSON_DEPTH = 64
# Consolidated metadata copies the metadata of every node below a group into one document: a
# plate of thousands of images holds tens of megabytes of it. Four times the caps above (at
# most ~400 MiB of Python objects while it is edited).
CONSOLIDATED_CAPS = {
    "max_bytes": 4 * MAX_JSON_BYTES,
    "max_values": 4 * MAX_JSON_VALUES,
    "max_containers": 4 * MAX_JSON_CONTAINERS,
}
# An array's metadata document is a few hundred bytes; its copies go into every new level.
MAX_ARRAY_JSON_BYTES = 1024 * 1024
# How many folders above an image a build looks for groups whose consolidated metadata
# lists it: a label image in a plate's field (plate/A/1/0/labels/cells) is five below.
MAX_PARENT_GROUPS = 6
# The files zarr v2 and v3 keep beside chunks.
ZARR_METADATA_NAMES = frozenset({".zarray", ".zattrs", ".zgroup", "zarr.json"})

URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_FORBIDDEN_CHARS = re.compile(r"[\\:\x00-\x1f\x7f]")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def finite_number(value: Any) -> bool:
    """Whether a JSON value is a finite number (``true`` is not a number here)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_image_path(zarrurl: str | os.PathLike[str]) -> Path:
    """Return the image group folder named by the user, refusing what we cannot build in place."""
    if not isinstance(zarrurl, str | os.PathLike):
        raise PyramidError(
            f"zarrurl must be a path to an OME-Zarr image group, got {type(zarrurl).__name__}"
        )
    text = os.fspath(zarrurl)
    if isinstance(text, bytes):
        raise PyramidError("zarrurl must be a text path, not bytes")
    if URL_SCHEME.match(text):
        raise PyramidError(
            f"{text!r} is not a local path: pyramids are built in place on a local or mounted "
            "filesystem; copy the image locally (or mount it) and pass that path"
        )
    if not text.strip():
        raise PyramidError("zarrurl is empty: pass the path of an OME-Zarr image group")
    if _CONTROL_CHARS.search(text):
        raise PyramidError(
            f"zarrurl {text!r} contains a NUL or control character; pass the plain path of "
            "an OME-Zarr image group"
        )
    root = Path(text).expanduser().absolute()
    if os.path.islink(root):
        raise PyramidError(
            f"{root} is a symbolic link; pass the folder it points to "
            f"({os.path.realpath(root)}) so that every write provably stays inside the image"
        )
    if not root.exists():
        raise PyramidError(f"{root} does not exist: pass the path of an OME-Zarr image group")
    if not root.is_dir():
        raise PyramidError(
            f"{root} is a file, not a zarr group folder: pass the image group "
            "(the folder that holds .zattrs/.zgroup or zarr.json)"
        )
    return root


def check_level_path(path: Any, what: str) -> str:
    """Return ``path`` if it is a safe relative array path inside a group, else raise."""
    if not isinstance(path, str):
        raise PyramidError(
            f"{what}: path must be a string, got {json.dumps(path)[:80]}. Fix the multiscales "
            "metadata."
        )
    problem = path_problem(path)
    if problem:
        raise PyramidError(
            f"{what}: path {path!r:.100} {problem}; level paths must be plain relative names "
            "inside the image group such as '0' or 's0'. Fix the multiscales metadata."
        )
    return path


def check_member_path(path: Any, what: str, example: str) -> str:
    """Return ``path`` if it is a safe relative path of a dataset's member, else raise.

    The same rules as level paths: a plate's well paths, a well's field paths, a labels
    group's names and a collection's series must all stay inside the dataset. ``what`` names
    the entry and the dataset (e.g. ``"plate.zarr: plate.wells[3]"``), ``example`` a good path.
    """
    if not isinstance(path, str):
        raise PyramidError(
            f"{what}: path must be a string, got {json.dumps(path)[:80]}. Fix the metadata."
        )
    problem = path_problem(path)
    if problem:
        raise PyramidError(
            f"{what}: path {path!r:.100} {problem}; it must be a plain relative name inside "
            f"the dataset such as {example!r}. Fix the metadata."
        )
    return path


def path_problem(path: str) -> str | None:
    """Why ``path`` is not a plain relative path inside a group, or None."""
    problem = None
    if path == "":
        problem = "is empty"
    elif path != path.strip():
        problem = "has leading or trailing spaces"
    elif path.startswith("/"):
        problem = "is absolute"
    elif URL_SCHEME.match(path):
        problem = "is a URL"
    elif _FORBIDDEN_CHARS.search(path):
        problem = "contains a backslash, colon or control character"
    elif any(part in ("", ".", "..") for part in path.split("/")):
        problem = "has an empty, '.' or '..' component"
    elif any(part.startswith(".") for part in path.split("/")):
        problem = "has a hidden component (starting with '.')"
    elif not path.isprintable():
        # Zero-width, direction-override and no-break characters make one name look like
        # another in every message and file browser.
        problem = "contains an invisible or non-printable character"
    elif any(part.endswith((".", " ")) for part in path.split("/")):
        # Windows and SMB mounts drop a trailing dot or space: '1.' would be the folder '1'.
        problem = "has a component ending with '.' or a space"
    elif len(path) > 1024:
        problem = "is longer than 1024 characters"
    return problem


def check_no_links(root: Path, rel: str, what: str) -> Path:
    """Return ``root/rel`` after checking that no existing component below root is a link.

    Used for every path the build will create, rename or replace: writing through a link
    could land anywhere on the filesystem.
    """
    current = root
    for part in rel.split("/"):
        current = current / part
        if os.path.islink(current):
            raise PyramidError(
                f"{what}: {current} is a symbolic link (to {os.readlink(current)}); the "
                "builder never writes through links. Replace the link by a real folder or file."
            )
    return current


def check_regular_file_for_write(path: Path, what: str) -> None:
    """Refuse to replace a metadata file that is a link or not a regular file."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode):
        raise PyramidError(
            f"{what}: {path} is a symbolic link (to {os.readlink(path)}); the builder never "
            "writes through links. Replace it by a regular file copy and run again."
        )
    if not stat.S_ISREG(info.st_mode):
        raise PyramidError(f"{what}: {path} is not a regular file")


def parse_json(
    raw: bytes,
    what: str,
    where: str,
    max_values: int = MAX_JSON_VALUES,
    max_containers: int = MAX_JSON_CONTAINERS,
) -> Any:
    """Parse a small JSON document strictly (``where`` names it in messages).

    Its number of values and containers (counted on the raw bytes, so before any Python
    object exists) and its depth are capped, so that whatever a stranger wrote, parsing and
    copying it stays cheap. The size cap is the store's (:meth:`Store.read_json`).
    """
    values, containers = raw.count(b",") + 1, raw.count(b"[") + raw.count(b"{")
    if values > max_values or containers > max_containers:
        kind = "JSON values" if values > max_values else "JSON objects and lists"
        limit = max_values if values > max_values else max_containers
        raise PyramidError(
            f"{what}: {where} holds more than {limit} {kind}, far more than any zarr metadata "
            "document; remove the extra content or restore the file"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PyramidError(
            f"{what}: {where} is not UTF-8 text (bad byte at offset {exc.start}); "
            "zarr metadata must be UTF-8 JSON. Fix or restore the file."
        ) from None
    too_deep = False
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PyramidError(
            f"{what}: {where} is not valid JSON ({exc.msg} at line {exc.lineno}, column "
            f"{exc.colno}). Fix or restore the file."
        ) from None
    except RecursionError:
        too_deep = True
    except ValueError:
        # Python refuses to convert integers of more than 4300 digits (CVE-2020-10735).
        raise PyramidError(
            f"{what}: {where} holds a number with thousands of digits, which no zarr metadata "
            "needs. Fix or restore the file."
        ) from None
    if too_deep or _too_deep(document):
        raise PyramidError(
            f"{what}: {where} is nested more than {MAX_JSON_DEPTH} levels deep, far more than "
            "any zarr metadata document. Fix or restore the file."
        )
    return document


def _too_deep(document: Any) -> bool:
    """Whether lists and objects nest deeper than MAX_JSON_DEPTH (checked without recursion)."""
    if not isinstance(document, dict | list):
        return False
    # One level at a time, containers only: consolidated metadata holds hundreds of
    # thousands of scalars, which need no look.
    level, depth = [document], 1
    while level:
        if depth > MAX_JSON_DEPTH:
            return True
        level = [
            child
            for node in level
            for child in (node.values() if isinstance(node, dict) else node)
            if isinstance(child, dict | list)
        ]
        depth += 1
    return False


def journal_problem(root: Path, record: dict[str, Any]) -> str | None:
    """Why a build journal found in ``root`` must not drive a roll-back, or None if it may.

    A journal lies inside the image, so a stranger can forge one: a roll-back renames,
    removes and rewrites what it lists. Accept only what a build of ours could have written:
    level paths inside the image (no links on the way), ``aside/<n>`` names in the build
    folder, the group metadata file and group files of level folders.
    """

    def level(rel: Any) -> None:
        try:
            check_level_path(rel, "journal")
            check_no_links(root, rel, "journal")
        except PyramidError:
            raise PyramidError(f"lists {rel!r:.80}, not a level folder inside the image") from None

    def group_file(rel: Any) -> None:
        if not isinstance(rel, str) or rel.rsplit("/", 1)[-1] not in (".zgroup", "zarr.json"):
            raise PyramidError(f"lists {rel!r:.80}, not a group metadata file of the image")
        if "/" in rel:
            level(rel.rsplit("/", 1)[0])
        level_file = root / rel
        if os.path.islink(level_file):
            raise PyramidError(f"lists {rel!r:.80}, a symbolic link")

    def pairs(key: str, size: int) -> list[Any]:
        entries = record.get(key, [])
        if not isinstance(entries, list) or not all(
            isinstance(e, list) and len(e) == size for e in entries
        ):
            raise PyramidError(f"has a malformed {key!r} list")
        return entries

    try:
        if record.get("metadata_file") not in (".zattrs", "zarr.json"):
            raise PyramidError(f"names the metadata file {record.get('metadata_file')!r:.80}")
        if os.path.islink(root / record["metadata_file"]):
            raise PyramidError(f"names the metadata file {record['metadata_file']!r}, a link")
        for key in ("original", "intermediate_sha256", "final_sha256", "phase"):
            if not isinstance(record.get(key), str | None):
                raise PyramidError(f"has a malformed {key!r}")
        for rel, inode, device in pairs("placed", 3):
            level(rel)
            if not isinstance(inode, int) or not isinstance(device, int):
                raise PyramidError("has a malformed 'placed' entry")
        for rel, name in pairs("moved_aside", 2):
            level(rel)
            if not isinstance(name, str) or not re.fullmatch(r"aside/\d{1,6}", name):
                raise PyramidError(f"lists {name!r:.80}, not a name in the build folder")
        dirs = record.get("created_dirs", [])
        if not isinstance(dirs, list):
            raise PyramidError("has a malformed 'created_dirs' list")
        for rel in dirs:
            level(rel)
        for rel, digest in pairs("created_files", 2):
            group_file(rel)
            if not isinstance(digest, str):
                raise PyramidError("has a malformed 'created_files' entry")
        edits = record.get("consolidated", [])
        if not isinstance(edits, list):
            raise PyramidError("has a malformed 'consolidated' list")
        for edit in edits:
            consolidated_edit_problem(root, edit)
    except PyramidError as exc:
        return str(exc)
    return None


def ancestor(root: Path, up: int) -> Path:
    """The folder ``up`` levels above ``root``, refusing to climb out of a link."""
    folder = root
    for _ in range(up):
        if os.path.islink(folder) or folder.parent == folder:
            raise PyramidError(f"{folder} is a link or has no parent")
        folder = folder.parent
    return folder


def consolidated_edit_problem(root: Path, edit: Any) -> None:
    """Refuse a journal's consolidated metadata edit a build of ``root`` could not have made.

    It may only name ``.zmetadata`` (or a group's ``zarr.json`` above the image) at most
    MAX_PARENT_GROUPS folders up, no link on the way, and change only entries of the image.
    """
    if not isinstance(edit, dict):
        raise PyramidError("has a malformed 'consolidated' entry")
    up, name = edit.get("up"), edit.get("file")
    if not isinstance(up, int) or isinstance(up, bool) or not 0 <= up <= MAX_PARENT_GROUPS:
        raise PyramidError(f"names a consolidated document {up!r:.20} folders up")
    if name not in (".zmetadata", "zarr.json") or (up == 0 and name != ".zmetadata"):
        raise PyramidError(f"names the consolidated document {name!r:.80}")
    folder = ancestor(root, up)
    if os.path.islink(folder / name):
        raise PyramidError(f"names {folder / name}, a symbolic link")
    prefix = "/".join(root.parts[len(root.parts) - up :]) if up else ""
    for state in ("between", "after", "before"):
        patch = edit.get(state)
        if patch is None and state == "between":
            continue
        if not isinstance(patch, dict):
            raise PyramidError(f"has a malformed consolidated {state!r} patch")
        for key, value in patch.items():
            inside = not prefix or key == prefix or key.startswith(prefix + "/")
            if not isinstance(key, str) or not inside:
                raise PyramidError(f"changes the entry {key!r:.80}, not one of the image")
            if value is not None and not isinstance(value, dict):
                raise PyramidError(f"sets the entry {key!r:.80} to a non-object")
    if not set(edit["after"]) | set(edit.get("between") or {}) <= set(edit["before"]):
        raise PyramidError("changes consolidated entries it did not record the state of")
