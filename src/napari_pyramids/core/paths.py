"""Paths and JSON that come from strangers: checked before they steer a read or a write.

An OME-Zarr image's metadata names the arrays it holds. Those names are input: a crafted
``"path": "../../etc"`` or a level folder that is a symbolic link must never make a build
write outside the image group. Everything here raises :class:`PyramidError` naming the
offending entry and what to do about it.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

from .errors import PyramidError

# A metadata document bigger than this is not an OME-Zarr attribute file but an attack or
# an accident; reading it whole would defeat the memory budget.
MAX_JSON_BYTES = 16 * 1024 * 1024

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_FORBIDDEN_CHARS = re.compile(r"[\\:\x00-\x1f\x7f]")


def image_root(zarrurl: str | os.PathLike[str]) -> Path:
    """Return the image group folder named by the user, refusing what we cannot build in place."""
    if not isinstance(zarrurl, str | os.PathLike):
        raise PyramidError(
            f"zarrurl must be a path to an OME-Zarr image group, got {type(zarrurl).__name__}"
        )
    text = os.fspath(zarrurl)
    if isinstance(text, bytes):
        raise PyramidError("zarrurl must be a text path, not bytes")
    if _URL.match(text):
        raise PyramidError(
            f"{text!r} is not a local path: pyramids are built in place on a local or mounted "
            "filesystem; copy the image locally (or mount it) and pass that path"
        )
    if not text.strip():
        raise PyramidError("zarrurl is empty: pass the path of an OME-Zarr image group")
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
        raise PyramidError(f"{what}: path must be a string, got {json.dumps(path)[:80]}")
    problem = None
    if path == "":
        problem = "is empty"
    elif path != path.strip():
        problem = "has leading or trailing spaces"
    elif path.startswith("/"):
        problem = "is absolute"
    elif _URL.match(path):
        problem = "is a URL"
    elif _FORBIDDEN_CHARS.search(path):
        problem = "contains a backslash, colon or control character"
    elif any(part in ("", ".", "..") for part in path.split("/")):
        problem = "has an empty, '.' or '..' component"
    elif any(part.startswith(".") for part in path.split("/")):
        problem = "has a hidden component (starting with '.')"
    elif len(path) > 1024:
        problem = "is longer than 1024 characters"
    if problem:
        raise PyramidError(
            f"{what}: path {path!r} {problem}; level paths must be plain relative names "
            "inside the image group such as '0' or 's0'. Fix the multiscales metadata."
        )
    return path


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


def read_json(path: Path, what: str) -> Any | None:
    """Read a small JSON document strictly; return None if the file does not exist."""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PyramidError(f"{what}: cannot read {path}: {exc.strerror}") from None
    if not os.path.isfile(path):
        raise PyramidError(f"{what}: {path} is not a regular file")
    if size > MAX_JSON_BYTES:
        raise PyramidError(
            f"{what}: {path} is {size} bytes, more than the {MAX_JSON_BYTES} a metadata "
            "document may hold; it is not valid zarr metadata"
        )
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PyramidError(f"{what}: cannot read {path}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PyramidError(
            f"{what}: {path} is not UTF-8 text (bad byte at offset {exc.start}); "
            "zarr metadata must be UTF-8 JSON. Fix or restore the file."
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise PyramidError(
            f"{what}: {path} is not valid JSON ({exc.msg} at line {exc.lineno}, column "
            f"{exc.colno}). Fix or restore the file."
        ) from None
    except RecursionError:
        raise PyramidError(f"{what}: {path} is nested too deeply to be zarr metadata") from None
