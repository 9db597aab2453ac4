"""The table of crafted images and bad calls, shared by the API, CLI and widget tests.

Every :class:`Case` builds its own image (a small valid OME-Zarr image, then broken on
purpose) under a test's ``tmp_path`` and names the call that must be refused: the error type,
the words its one-line message must contain (the offending entry and the fix), and the folders
that must not change. Link targets live in ``tmp_path / "outside"``, beside the image's folder
``tmp_path / "lab"``, so a snapshot of both proves nothing inside or outside the image moved.

:data:`HARMLESS` lists crafted images that must *build*: links read through but never written
through, forged leftovers of an interrupted build, names that only look dangerous. Their
``check`` inspects what was built; nothing outside the image may change.

Images are written with plain zarr calls (see ``imaging.py``), never with napari_pyramids.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from imaging import level_paths, metadata_file, tree_snapshot, write_image
from napari_pyramids.errors import (
    LabelMethodError,
    LevelExistsError,
    MemoryBudgetError,
    NoZAxisError,
    PyramidError,
    TooManyLevelsError,
)

SHAPE = (64, 64)
CHUNKS = (16, 16)
DATA = np.arange(math.prod(SHAPE), dtype=np.uint16).reshape(SHAPE)


@dataclass(frozen=True)
class Crafted:
    """A crafted image on disk: what to pass as ``zarrurl`` and which folders must not change."""

    zarrurl: str
    watch: tuple[Path, ...]
    names: Mapping[str, str] = field(default_factory=dict)

    def snapshot(self) -> dict[str, dict[str, str]]:
        """Hashes of every file and link in the watched folders (and beside them)."""
        return {str(folder): tree_snapshot(folder) for folder in self.watch}


@dataclass(frozen=True)
class Case:
    """One refused call: the image, the keywords, and what the refusal must say."""

    id: str
    issue: str
    build: Callable[[Path], Crafted]
    words: tuple[str, ...]
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    # Extra CLI arguments; None means "derive from kwargs", API_ONLY means not expressible.
    cli: tuple[str, ...] | None = None
    cli_words: tuple[str, ...] | None = None
    error: type[Exception] = PyramidError

    def message_words(self, crafted: Crafted, cli: bool = False) -> list[str]:
        words = self.cli_words if cli and self.cli_words is not None else self.words
        return [w.format(**crafted.names) for w in words]


API_ONLY: tuple[str, ...] = ("<api-only>",)
_CLI_FLAGS = {
    "num_levels": "--levels",
    "coarsening_xy": "--factor",
    "coarsening_z": "--z-factor",
    "method": "--method",
    "edge": "--edge",
    "memory_budget": "--memory",
    "workers": "--workers",
}


def cli_arguments(case: Case) -> list[str] | None:
    """The ``napari-pyramids build`` arguments after ZARRURL, or None if API-only."""
    if case.cli == API_ONLY:
        return None
    if case.cli is not None:
        return list(case.cli)
    args = ["--levels", str(case.kwargs.get("num_levels", 2))]
    for key, value in case.kwargs.items():
        if key == "num_levels":
            continue
        if key in _CLI_FLAGS and isinstance(value, int | str) and not isinstance(value, bool):
            args += [_CLI_FLAGS[key], str(value)]
        elif key == "chunksize":
            # "--chunks=-4,16": a separate "-4,16" would read as an option.
            args.append("--chunks=" + ",".join(str(c) for c in value))
        elif key == "overwrite" and value is True:
            args.append("--overwrite")
        elif key == "labels" and value is False:
            args.append("--not-labels")
        else:
            raise ValueError(f"case {case.id}: {key}={value!r} has no CLI spelling")
    return args


# --- building blocks ------------------------------------------------------------------------


def lab(tmp: Path) -> Path:
    return tmp / "lab" / "img.zarr"


def outside(tmp: Path) -> Path:
    """A folder beside the image with a file and a folder a crafted link may point at."""
    folder = tmp / "outside"
    if not folder.exists():
        (folder / "victim").mkdir(parents=True)
        (folder / "empty").mkdir()
        (folder / "secret.txt").write_text("precious\n")
        (folder / "victim" / "data.bin").write_bytes(b"\x01\x02\x03")
    return folder


_TEMPLATES = tempfile.TemporaryDirectory(prefix="crafted-templates-")


def image(tmp: Path, zarr_format: int = 2, **kwargs: Any) -> Path:
    """A valid 64x64 uint16 image at ``tmp/lab/img.zarr``.

    Each variant is written once with zarr and copied for every case: hundreds of rows
    then cost a file copy each, not a zarr write.
    """
    key = hashlib.sha256(repr((zarr_format, sorted(kwargs.items()))).encode()).hexdigest()
    template = Path(_TEMPLATES.name) / key[:16] / "img.zarr"
    if not template.exists():
        kwargs.setdefault("chunks", CHUNKS)
        write_image(template, DATA, zarr_format=zarr_format, **kwargs)
    root = lab(tmp)
    root.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(template, root, symlinks=True)
    return root


def crafted(root: Path, tmp: Path, **names: str) -> Crafted:
    """The image at ``root``, watched with the folder outside it (so all of ``tmp``)."""
    return Crafted(
        str(root),
        (root, outside(tmp)),
        {"root": str(root), "outside": str(tmp / "outside"), **names},
    )


def read_doc(path: Path) -> Any:
    return json.loads(path.read_text())


def write_doc(path: Path, doc: Any) -> None:
    path.write_text(json.dumps(doc, allow_nan=True))


def edit_ngff(root: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Apply ``change`` to the dict holding ``multiscales`` (0.4 attrs or 0.5 ``ome``)."""
    path = metadata_file(root)
    doc = read_doc(path)
    change(doc["attributes"]["ome"] if path.name == "zarr.json" else doc)
    write_doc(path, doc)


def edit_multiscale(root: Path, change: Callable[[dict[str, Any]], None]) -> None:
    edit_ngff(root, lambda ome: change(ome["multiscales"][0]))


def edit_array(root: Path, change: Callable[[dict[str, Any]], None], level: str = "0") -> None:
    path = root / level / (".zarray" if (root / level / ".zarray").exists() else "zarr.json")
    doc = read_doc(path)
    change(doc)
    write_doc(path, doc)


def dataset(path: Any, scale: Sequence[float] = (1.0, 1.0)) -> dict[str, Any]:
    return {"path": path, "coordinateTransformations": [{"type": "scale", "scale": list(scale)}]}


def add_levels(root: Path, *paths: str) -> None:
    """List extra levels in the metadata (arrays are not created)."""

    def change(multiscale: dict[str, Any]) -> None:
        for k, p in enumerate(paths, start=1):
            multiscale["datasets"].append(dataset(p, (2.0**k, 2.0**k)))

    edit_multiscale(root, change)


def setter(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        doc[key] = value

    return change


def dropper(key: str) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        doc.pop(key)

    return change


# --- case builders --------------------------------------------------------------------------


def level_path_case(path: Any, zarr_format: int = 2, index: int = 0) -> Callable:
    """datasets[index].path replaced by a crafted value (index 1 adds a second level)."""

    def build(tmp: Path) -> Crafted:
        root = image(tmp, zarr_format)
        if index:
            add_levels(root, "1")

        def change(multiscale: dict[str, Any]) -> None:
            text = path.format(outside=outside(tmp)) if isinstance(path, str) else path
            multiscale["datasets"][index]["path"] = text

        edit_multiscale(root, change)
        return crafted(root, tmp)

    return build


def ngff_case(change: Callable[[dict[str, Any]], None], zarr_format: int = 2) -> Callable:
    def build(tmp: Path) -> Crafted:
        root = image(tmp, zarr_format)
        edit_ngff(root, change)
        return crafted(root, tmp)

    return build


def multiscale_case(change: Callable[[dict[str, Any]], None], zarr_format: int = 2) -> Callable:
    return ngff_case(lambda ome: change(ome["multiscales"][0]), zarr_format)


def array_case(change: Callable[[dict[str, Any]], None], zarr_format: int = 2) -> Callable:
    def build(tmp: Path) -> Crafted:
        root = image(tmp, zarr_format)
        edit_array(root, change)
        return crafted(root, tmp)

    return build


def raw_case(name: str, content: bytes, zarr_format: int = 2) -> Callable:
    """Replace one metadata file (relative to the image) by raw bytes."""

    def build(tmp: Path) -> Crafted:
        root = image(tmp, zarr_format)
        (root / name).write_bytes(content)
        return crafted(root, tmp)

    return build


def link_case(
    name: str,
    target: str | None,
    zarr_format: int = 2,
    levels: Sequence[str] = (),
    make_dirs: str = "",
) -> Callable:
    """``root/name`` becomes a symbolic link to ``outside/target``.

    With ``target=None`` the file moves outside and the link points at it: the image reads
    exactly as before, so only writing through the link can be refused.
    """

    def build(tmp: Path) -> Crafted:
        root = image(tmp, zarr_format, **({"level_path": make_dirs} if make_dirs else {}))
        out = outside(tmp)
        if levels:
            add_levels(root, *levels)
        moved = out / f"moved-{name.replace('/', '_')}"
        if (root / name).exists():
            os.rename(root / name, moved)
        os.symlink(moved if target is None else out / target, root / name)
        return crafted(root, tmp, link=str(root / name))

    return build


def existing_level_case(listed: bool) -> Callable:
    """An array '1' beside level 0 (a seed-built level when not listed)."""

    def build(tmp: Path) -> Crafted:
        root = image(tmp)
        zarr.create_array(str(root / "1"), shape=(32, 32), dtype="uint16", zarr_format=2)
        if listed:
            add_levels(root, "1")
        return crafted(root, tmp)

    return build


def user_data_at(name: str, listed: bool = False, as_file: bool = False, **kw: Any) -> Callable:
    """Something of the user's (not a zarr array) where a level is or would be written."""

    def build(tmp: Path) -> Crafted:
        root = image(tmp, **kw)
        target = root / name
        if as_file:
            target.write_text("user data\n")
        else:
            target.mkdir()
            (target / "notes.txt").write_text("user data\n")
        if listed:
            add_levels(root, name)
        return crafted(root, tmp, target=str(target))

    return build


def labels_case(via_group: bool, zarr_format: int = 2) -> Callable:
    def build(tmp: Path) -> Crafted:
        labels_dir = tmp / "lab" / "img.zarr" / "labels"
        if via_group:
            root = labels_dir / "cells"
            labels_dir.mkdir(parents=True)
            write_image(root, DATA, zarr_format=zarr_format, chunks=CHUNKS)
            attrs = {"labels": ["cells"]}
            if zarr_format == 2:
                write_doc(labels_dir / ".zgroup", {"zarr_format": 2})
                write_doc(labels_dir / ".zattrs", attrs)
            else:
                write_doc(
                    labels_dir / "zarr.json",
                    {
                        "zarr_format": 3,
                        "node_type": "group",
                        "attributes": {"ome": {"version": "0.5", **attrs}},
                    },
                )
        else:
            root = image(tmp, zarr_format, labels=True)
        return crafted(root, tmp)

    return build


def labels_parent_case(doc: Any) -> Callable:
    """A ``labels/<name>`` image whose parent labels group metadata is malformed."""

    def build(tmp: Path) -> Crafted:
        labels_dir = tmp / "lab" / "labels"
        labels_dir.mkdir(parents=True)
        root = labels_dir / "cells"
        write_image(root, DATA, zarr_format=3, chunks=CHUNKS)
        write_doc(labels_dir / "zarr.json", doc)
        return crafted(root, tmp)

    return build


def dimensions_case(ndim: int) -> Callable:
    """A 1D image, or a 5D one whose array metadata claims a sixth dimension."""

    def build(tmp: Path) -> Crafted:
        root = lab(tmp)
        root.parent.mkdir(parents=True)
        if ndim == 1:
            write_image(root, np.zeros(4, np.uint8), axes="x")
        else:
            write_image(root, np.zeros((4,) * 5, np.uint8))
            edit_array(root, setter("shape", [4] * ndim))
            edit_array(root, setter("chunks", [4] * ndim))
        return crafted(root, tmp)

    return build


def not_an_image(kind: str) -> Callable:
    def build(tmp: Path) -> Crafted:
        folder = tmp / "lab"
        folder.mkdir()
        root = folder / "img.zarr"
        if kind == "missing":
            pass
        elif kind == "folder":
            root.mkdir()
            (root / "readme.txt").write_text("not zarr\n")
        elif kind == "file":
            root.write_text("not zarr\n")
        elif kind == "plate":
            root.mkdir()
            write_doc(root / ".zgroup", {"zarr_format": 2})
            write_doc(root / ".zattrs", {"plate": {"version": "0.4", "wells": []}})
        return Crafted(str(root), (folder / "watched",), {"root": str(root)})

    return build


def url_case(url: str) -> Callable:
    def build(tmp: Path) -> Crafted:
        root = image(tmp)
        return Crafted(url, (root,), {"root": url})

    return build


def array_as_zarrurl(zarr_format: int) -> Callable:
    def build(tmp: Path) -> Crafted:
        root = image(tmp, zarr_format)
        return Crafted(str(root / "0"), (root,), {"root": str(root / "0")})

    return build


def symlinked_zarrurl(tmp: Path) -> Crafted:
    root = image(tmp)
    link = tmp / "lab" / "shortcut.zarr"
    os.symlink(root, link)
    return Crafted(str(link), (root,), {"root": str(link), "real": str(root)})


def mixed_formats(group_format: int) -> Callable:
    """Level 0 written in the other zarr format than its group."""

    def build(tmp: Path) -> Crafted:
        root = image(tmp, group_format)
        other = tmp / "other.zarr"
        write_image(other, DATA, zarr_format=5 - group_format, chunks=CHUNKS)
        os.rename(root / "0", tmp / "discarded")
        os.rename(other / "0", root / "0")
        return crafted(root, tmp)

    return build


def missing_array(tmp: Path) -> Crafted:
    root = image(tmp)
    os.rename(root / "0", tmp / "elsewhere")
    return crafted(root, tmp)


def v3_shards(shards: Sequence[int], chunks: Sequence[int]) -> Callable:
    def build(tmp: Path) -> Crafted:
        root = image(tmp, 3, chunks=(16, 16), shards=(32, 32))

        def change(doc: dict[str, Any]) -> None:
            doc["chunk_grid"]["configuration"]["chunk_shape"] = list(shards)
            doc["codecs"][0]["configuration"]["chunk_shape"] = list(chunks)

        edit_array(root, change)
        return crafted(root, tmp)

    return build


def many_levels(count: int) -> Callable:
    def build(tmp: Path) -> Crafted:
        root = image(tmp)

        def change(multiscale: dict[str, Any]) -> None:
            multiscale["datasets"] += [dataset(f"{k}") for k in range(1, count)]

        edit_multiscale(root, change)
        return crafted(root, tmp)

    return build


def huge_attributes(tmp: Path) -> Crafted:
    root = image(tmp)
    doc = read_doc(root / ".zattrs")
    doc["padding"] = "x" * (16 * 2**20 + 1)
    write_doc(root / ".zattrs", doc)
    return crafted(root, tmp)


def container_bomb(tmp: Path) -> Crafted:
    """Just under 16 MiB of empty lists: 5 million Python lists (400 MiB) if parsed."""
    root = image(tmp)
    doc = read_doc(root / ".zattrs")
    body = json.dumps(doc)[:-1]
    count = (15 * 2**20) // 3
    (root / ".zattrs").write_text(body + ', "bomb": [' + ",".join(["[]"] * count) + "]}")
    return crafted(root, tmp)


def number_bomb(tmp: Path) -> Crafted:
    """Just under 16 MiB of numbers: 4 million Python floats (130 MiB) if parsed."""
    root = image(tmp)
    doc = read_doc(root / ".zattrs")
    body = json.dumps(doc)[:-1]
    count = (15 * 2**20) // 4
    (root / ".zattrs").write_text(body + ', "bomb": [' + ",".join(["1.5"] * count) + "]}")
    return crafted(root, tmp)


def deep_json(depth: int) -> Callable:
    def build(tmp: Path) -> Crafted:
        root = image(tmp)
        doc = read_doc(root / ".zattrs")
        body = json.dumps(doc)[:-1]
        (root / ".zattrs").write_text(body + ', "deep": ' + "[" * depth + "]" * depth + "}")
        return crafted(root, tmp)

    return build


def huge_integer(tmp: Path) -> Crafted:
    """A shape of 5000 digits: Python refuses to parse integers that long."""
    root = image(tmp)
    doc = read_doc(root / "0" / ".zarray")
    doc["shape"] = ["HUGE", 64]
    text = json.dumps(doc).replace('"HUGE"', "9" * 5000)
    (root / "0" / ".zarray").write_text(text)
    return crafted(root, tmp)


def chunk_file(kind: str) -> Callable:
    """Level 0's first chunk file replaced by something no honest chunk is."""

    def build(tmp: Path) -> Crafted:
        root = image(tmp)
        chunk = root / "0" / "0" / "0"
        os.unlink(chunk)
        if kind == "dev-zero":
            os.symlink("/dev/zero", chunk)
        elif kind == "fifo":
            os.mkfifo(chunk)
        elif kind == "sparse":
            with open(chunk, "wb") as handle:
                handle.truncate(8 * 2**20)  # no disk space, 8 MiB to read for 512 bytes
        elif kind == "corrupt":
            chunk.write_bytes(bytes(range(256)) * 2)  # not a blosc frame
        elif kind == "zlib-bomb":
            edit_array(root, setter("compressor", {"id": "zlib", "level": 9}))
            for other in (root / "0").rglob("*"):
                if other.is_file() and not other.name.startswith("."):
                    other.write_bytes(zlib.compress(np.zeros(CHUNKS, np.uint16).tobytes()))
            chunk.write_bytes(zlib.compress(bytes(64 * 2**20), 9))  # 64 KiB -> 64 MiB
        return crafted(root, tmp, chunk=str(chunk))

    return build


def lock_link(tmp: Path) -> Crafted:
    root = image(tmp)
    out = outside(tmp)
    os.symlink(out / "secret.txt", root / ".napari-pyramids.lock")
    return crafted(root, tmp, link=str(root / ".napari-pyramids.lock"))


def _v3_with_04_metadata(tmp: Path) -> Crafted:
    root = image(tmp, 3)
    doc = read_doc(root / "zarr.json")
    ome = doc["attributes"].pop("ome")
    ome["multiscales"][0]["version"] = "0.4"
    doc["attributes"]["multiscales"] = ome["multiscales"]
    write_doc(root / "zarr.json", doc)
    return crafted(root, tmp)


def image_case(tmp: Path) -> Crafted:
    """A valid image: the call itself is what is wrong."""
    return crafted(image(tmp), tmp)


# --- the table ------------------------------------------------------------------------------

FIX_METADATA = "fix the multiscales metadata"
V2_ATTRS = "{root}/.zattrs"
V2_ARRAY = "{root}/0/.zarray"
V3_ARRAY = "{root}/0/zarr.json"

_LEVEL_PATHS = [
    ("dotdot", "..", "'..'"),
    ("dotdot-x", "../x", "'../x'"),
    ("escape-nested", "a/../../b", "'a/../../b'"),
    ("absolute", "/tmp/x", "'/tmp/x'"),
    ("absolute-into-outside", "{outside}/new", "'{outside}/new'"),
    ("empty", "", "''"),
    ("dot", ".", "'.'"),
    ("dot-slash", "./0", "'./0'"),
    ("backslash", "a\\b", "'a\\\\b'"),
    ("url-http", "http://x/0", "'http://x/0'"),
    ("url-s3", "s3://b/0", "'s3://b/0'"),
    ("url-file", "file:///etc", "'file:///etc'"),
    ("windows-drive", "C:/x", "'C:/x'"),
    ("nul", "0\x00", "'0\\x00'"),
    ("escape-sequence", "0\x1b[31m", "'0\\x1b[31m'"),
    ("newline", "0\n1", "'0\\n1'"),
    ("hidden-zattrs", ".zattrs", "'.zattrs'"),
    ("trailing-slash", "0/", "'0/'"),
    ("trailing-dot", "0.", "'0.'"),
    ("leading-space", " 0", "' 0'"),
    ("zero-width-space", "0\u200b", "'0\\u200b'"),
    ("right-to-left-override", "\u202e0", "'\\u202e0'"),
    ("no-break-space", "0\u00a0", "'0\\xa0'"),
    ("too-long", "a" * 1025, "longer than 1024"),
]

CASES: list[Case] = []

for _id, _path, _shown in _LEVEL_PATHS:
    CASES.append(
        Case(
            f"level-path-{_id}", "6", level_path_case(_path), ("datasets[0]", _shown, FIX_METADATA)
        )
    )
CASES += [
    Case("level-path-v3-dotdot", "6", level_path_case("../x", 3), ("datasets[0]", "'../x'")),
    Case(
        "level-path-second-level-escapes",
        "6",
        level_path_case("../1", index=1),
        ("datasets[1]", "'../1'", FIX_METADATA),
        kwargs={"overwrite": True},
    ),
    Case("level-path-number", "6", level_path_case(0), ("datasets[0]", "must be a string")),
    Case("level-path-missing", "6", level_path_case(None), ("datasets[0]", "must be a string")),
    Case("level-path-list", "6", level_path_case(["0"]), ("datasets[0]", "must be a string")),
    # Symbolic links: never written through.
    Case(
        "link-new-level-outside",
        "6",
        link_case("1", "victim"),
        ("{link}", "symbolic link", "replace the link"),
    ),
    Case(
        "link-new-level-outside-overwrite",
        "6",
        link_case("1", "victim"),
        ("{link}", "symbolic link", "replace the link"),
        kwargs={"overwrite": True},
    ),
    Case(
        "link-listed-level-overwrite",
        "6",
        link_case("1", "victim", levels=("1",)),
        ("{link}", "symbolic link", "replace the link"),
        kwargs={"overwrite": True},
    ),
    Case(
        "link-level-to-drop",
        "6",
        link_case("2", "victim", levels=("1", "2")),
        ("level to drop", "{link}", "symbolic link", "replace the link"),
        kwargs={"overwrite": True},
    ),
    Case(
        "link-parent-of-new-level",
        "6",
        link_case("scale1", "victim", make_dirs="scale0/image"),
        ("{link}", "symbolic link", "replace the link"),
    ),
    Case(
        "link-zattrs",
        "6",
        link_case(".zattrs", None),
        ("{link}", "symbolic link", "regular file"),
    ),
    Case(
        "link-zgroup",
        "6",
        link_case(".zgroup", None),
        ("{link}", "symbolic link", "regular file"),
    ),
    Case(
        "link-v3-group-zarr-json",
        "6",
        link_case("zarr.json", None, zarr_format=3),
        ("{link}", "symbolic link", "regular file"),
    ),
    Case("link-lock-file", "6", lock_link, ("{link}", "symbolic link", "remove it")),
    Case(
        "link-zarrurl",
        "5",
        symlinked_zarrurl,
        ("{root}", "symbolic link", "pass the folder it points to", "{real}"),
    ),
    # Shapes, chunks and shards the memory budget cannot honour.
    Case(
        "shape-1e15-voxels",
        "6",
        array_case(setter("shape", [10**8, 10**7])),
        (V2_ARRAY, "voxels", "fix the shape"),
    ),
    Case(
        "shape-huge-integer",
        "6",
        huge_integer,
        (V2_ARRAY, "number", "fix or restore"),
    ),
    Case(
        "chunk-bigger-than-default-budget",
        "6",
        array_case(setter("chunks", [2**15, 2**15])),
        ("level 0", "chunk", "memory budget", "raise memory_budget"),
        cli_words=("level 0", "chunk", "memory budget", "--memory"),
        error=MemoryBudgetError,
    ),
    Case(
        "chunk-bigger-than-given-budget",
        "6",
        array_case(setter("chunks", [4096, 4096])),
        ("level 0", "chunk", "memory budget", "16.00 MiB", "raise memory_budget"),
        kwargs={"memory_budget": "16MiB"},
        cli_words=("level 0", "chunk", "memory budget", "--memory"),
        error=MemoryBudgetError,
    ),
    Case(
        "v3-shard-bigger-than-budget",
        "6",
        v3_shards([2**15, 2**15], [16, 16]),
        ("level 0", "shard", "memory budget"),
        error=MemoryBudgetError,
    ),
    Case(
        "v3-shard-not-multiple-of-chunks",
        "6",
        v3_shards([32, 32], [24, 24]),
        (V3_ARRAY, "not a multiple", "fix"),
    ),
    Case("shape-zero", "6", array_case(setter("shape", [0, 64])), (V2_ARRAY, "empty")),
    Case("shape-negative", "6", array_case(setter("shape", [-64, 64])), (V2_ARRAY, "shape")),
    Case("chunks-zero", "6", array_case(setter("chunks", [0, 16])), (V2_ARRAY, "chunks")),
    Case("chunks-wrong-length", "6", array_case(setter("chunks", [16])), (V2_ARRAY, "chunks")),
    Case(
        "listed-levels-10000",
        "6",
        many_levels(10_000),
        ("10000 levels", "at most", FIX_METADATA),
    ),
    # Chunk files are input too.
    Case(
        "chunk-file-links-to-dev-zero",
        "6",
        chunk_file("dev-zero"),
        ("{chunk}", "not a regular file", "restore"),
    ),
    Case("chunk-file-is-a-fifo", "6", chunk_file("fifo"), ("{chunk}", "not a regular file")),
    Case(
        "chunk-file-sparse-8MiB",
        "6",
        chunk_file("sparse"),
        ("{chunk}", "8388608 bytes", "more than any chunk", "restore"),
    ),
    Case(
        "chunk-file-corrupt",
        "5",
        chunk_file("corrupt"),
        ("{root}/0", "could not be read", "restore"),
    ),
    Case(
        "chunk-file-zlib-bomb",
        "6",
        chunk_file("zlib-bomb"),
        ("{root}/0", "could not be read", "restore"),
    ),
    # JSON that is not JSON, too big, too deep, or of the wrong shape.
    Case(
        "json-malformed-zattrs",
        "6",
        raw_case(".zattrs", b"{not json"),
        (V2_ATTRS, "not valid JSON", "fix or restore"),
    ),
    Case(
        "json-malformed-v3-group",
        "6",
        raw_case("zarr.json", b'{"zarr_format": 3,', 3),
        ("{root}/zarr.json", "not valid JSON"),
    ),
    Case(
        "json-malformed-zarray",
        "5",
        raw_case("0/.zarray", b"[1, 2"),
        (V2_ARRAY, "not valid JSON", "fix or restore"),
    ),
    Case(
        "json-malformed-v3-array",
        "5",
        raw_case("0/zarr.json", b"{,}", 3),
        (V3_ARRAY, "not valid JSON"),
    ),
    Case(
        "json-not-utf8",
        "6",
        raw_case(".zattrs", b'{"name": "\xff\xfe"}'),
        (V2_ATTRS, "not UTF-8", "fix or restore"),
    ),
    Case("json-bigger-than-16MiB", "6", huge_attributes, (V2_ATTRS, "bytes", "16777216")),
    Case("json-container-bomb", "6", container_bomb, (V2_ATTRS, "JSON", "restore the file")),
    Case("json-number-bomb", "6", number_bomb, (V2_ATTRS, "JSON values", "restore the file")),
    Case("json-nested-100000", "6", deep_json(100_000), (V2_ATTRS, "nested")),
    Case("json-nested-200", "6", deep_json(200), (V2_ATTRS, "nested")),
    Case("json-zattrs-is-a-list", "6", raw_case(".zattrs", b"[]"), (V2_ATTRS, "JSON object")),
    Case(
        "json-multiscales-is-a-string",
        "6",
        ngff_case(setter("multiscales", "x")),
        ("multiscales", "non-empty list"),
    ),
    Case(
        "json-multiscales-empty",
        "6",
        ngff_case(setter("multiscales", [])),
        ("multiscales", "non-empty list"),
    ),
    Case(
        "json-datasets-is-a-string",
        "6",
        multiscale_case(setter("datasets", "0")),
        ("datasets", "non-empty list"),
    ),
    Case(
        "json-datasets-empty",
        "6",
        multiscale_case(setter("datasets", [])),
        ("datasets", "non-empty list"),
    ),
    Case("json-axes-is-a-string", "6", multiscale_case(setter("axes", "yx")), ("axes", "list")),
    Case("json-axes-missing", "6", multiscale_case(dropper("axes")), ("axes", "missing")),
    Case(
        "json-axes-count-differs-from-ndim",
        "6",
        multiscale_case(setter("axes", [{"name": "x", "type": "space"}])),
        ("axes", "1 axes", "2 dimensions"),
    ),
    Case(
        "json-axes-duplicate-names",
        "6",
        multiscale_case(setter("axes", [{"name": "x"}, {"name": "X"}])),
        ("axes", "repeats"),
    ),
    Case(
        "json-axis-name-is-a-number",
        "6",
        multiscale_case(setter("axes", [{"name": 1}, {"name": "x"}])),
        ("axes[0]", "string 'name'"),
    ),
    Case(
        "json-transforms-is-a-string",
        "6",
        multiscale_case(setter("datasets", [{"path": "0", "coordinateTransformations": "scale"}])),
        ("datasets[0].coordinateTransformations", "list"),
    ),
    Case(
        "json-no-scale-transform",
        "6",
        multiscale_case(
            setter(
                "datasets", [{"path": "0", "coordinateTransformations": [{"type": "identity"}]}]
            )
        ),
        ("datasets[0]", "no scale"),
    ),
    Case(
        "json-scale-as-strings",
        "6",
        multiscale_case(setter("datasets", [dataset("0", ["1", "1"])])),
        ("datasets[0] scale", "numbers"),
    ),
    Case(
        "json-scale-bools",
        "6",
        multiscale_case(setter("datasets", [dataset("0", [True, 1])])),
        ("datasets[0] scale", "numbers"),
    ),
    Case(
        "json-scale-zero",
        "6",
        multiscale_case(setter("datasets", [dataset("0", [0, 1])])),
        ("datasets[0] scale", "positive"),
    ),
    Case(
        "json-scale-negative",
        "6",
        multiscale_case(setter("datasets", [dataset("0", [-1, 1])])),
        ("datasets[0] scale", "positive"),
    ),
    Case(
        "json-scale-nan",
        "6",
        multiscale_case(setter("datasets", [dataset("0", [float("nan"), 1])])),
        ("datasets[0] scale", "finite"),
    ),
    Case(
        "json-scale-infinity",
        "6",
        multiscale_case(setter("datasets", [dataset("0", [float("inf"), 1])])),
        ("datasets[0] scale", "finite"),
    ),
    Case(
        "json-scale-wrong-length",
        "6",
        multiscale_case(setter("datasets", [dataset("0", [1, 1, 1])])),
        ("scale of length 3", "2 axes"),
    ),
    Case(
        "json-translation-nan",
        "6",
        multiscale_case(
            setter(
                "datasets",
                [
                    {
                        "path": "0",
                        "coordinateTransformations": [
                            {"type": "scale", "scale": [1, 1]},
                            {"type": "translation", "translation": [float("nan"), 0]},
                        ],
                    }
                ],
            )
        ),
        ("datasets[0] translation", "finite"),
    ),
    Case(
        "json-duplicate-level-paths",
        "6",
        multiscale_case(setter("datasets", [dataset("0"), dataset("0", [2, 2])])),
        ("'0'", "more than once", "fix"),
    ),
    Case(
        "json-shape-as-strings",
        "6",
        array_case(setter("shape", ["64", "64"])),
        (V2_ARRAY, "shape", "integers"),
    ),
    Case(
        "json-shape-bools",
        "6",
        array_case(setter("shape", [True, 64])),
        (V2_ARRAY, "shape", "integers"),
    ),
    Case(
        "json-shape-floats",
        "6",
        array_case(setter("shape", [64.0, 64])),
        (V2_ARRAY, "shape", "integers"),
    ),
    Case(
        "json-chunks-bools",
        "6",
        array_case(setter("chunks", [True, 16])),
        (V2_ARRAY, "chunks", "integers"),
    ),
    Case(
        "json-v3-chunk-grid-configuration-list",
        "6",
        array_case(setter("chunk_grid", {"name": "regular", "configuration": []}), 3),
        (V3_ARRAY, "chunk_grid"),
    ),
    Case(
        "json-v3-codecs-is-a-string",
        "6",
        array_case(setter("codecs", "zstd"), 3),
        (V3_ARRAY, "codecs"),
    ),
    Case("json-v2-order", "6", array_case(setter("order", "Z")), (V2_ARRAY, "order")),
    Case(
        "json-v2-fill-value",
        "6",
        array_case(setter("fill_value", "lots")),
        (V2_ARRAY, "fill_value"),
    ),
    Case(
        "json-v3-fill-value",
        "6",
        array_case(setter("fill_value", [1, 2]), 3),
        (V3_ARRAY, "fill_value"),
    ),
    # NGFF versions and zarr formats.
    Case(
        "ngff-0.3",
        "6",
        multiscale_case(setter("version", "0.3")),
        ("'0.3'", "not supported", "convert"),
    ),
    Case(
        "ngff-version-missing",
        "6",
        multiscale_case(dropper("version")),
        ("None", "not supported", "convert"),
    ),
    Case(
        "ngff-0.6-in-v3",
        "6",
        ngff_case(setter("version", "0.6"), 3),
        ("'0.6'", "not supported", "convert"),
    ),
    Case(
        "ngff-0.4-in-v3",
        "6",
        ngff_case(setter("version", "0.4"), 3),
        ("'0.4'", "zarr v3", "convert"),
    ),
    Case(
        "ngff-0.5-in-v2",
        "6",
        multiscale_case(setter("version", "0.5")),
        ("'0.5'", "zarr v2", "convert"),
    ),
    Case(
        "ngff-v3-group-with-0.4-metadata",
        "6",
        _v3_with_04_metadata,
        ("{root}/zarr.json", "0.4-style", "under 'ome'"),
    ),
    Case(
        "mixed-v2-group-v3-array",
        "6",
        mixed_formats(2),
        ("zarr v3 array", "zarr v2 group", "convert"),
    ),
    Case(
        "mixed-v3-group-v2-array",
        "6",
        mixed_formats(3),
        ("zarr v2 array", "zarr v3 group", "convert"),
    ),
    # Data types and codecs.
    Case(
        "dtype-complex",
        "6",
        array_case(setter("dtype", "<c8")),
        (V2_ARRAY, "complex64", "not supported"),
    ),
    Case(
        "dtype-structured",
        "6",
        array_case(setter("dtype", [["a", "<i4"], ["b", "<i4"]])),
        (V2_ARRAY, "dtype"),
    ),
    Case(
        "dtype-structured-string",
        "6",
        array_case(setter("dtype", "i4,i4")),
        (V2_ARRAY, "not supported"),
    ),
    Case(
        "dtype-subarray-huge",
        "6",
        array_case(setter("dtype", "(99999999999,)i4")),
        (V2_ARRAY, "dtype"),
    ),
    Case(
        "dtype-unicode-strings",
        "6",
        array_case(setter("dtype", "<U8")),
        (V2_ARRAY, "not supported"),
    ),
    Case("dtype-object", "6", array_case(setter("dtype", "|O")), (V2_ARRAY, "not supported")),
    Case(
        "dtype-datetime", "6", array_case(setter("dtype", "<M8[ns]")), (V2_ARRAY, "not supported")
    ),
    Case(
        "dtype-v3-complex",
        "6",
        array_case(setter("data_type", "complex64"), 3),
        (V3_ARRAY, "'complex64'", "not supported"),
    ),
    Case(
        "dtype-v3-string",
        "6",
        array_case(setter("data_type", "string"), 3),
        (V3_ARRAY, "'string'", "not supported"),
    ),
    Case(
        "dtype-v3-structured",
        "6",
        array_case(setter("data_type", {"name": "structured"}), 3),
        (V3_ARRAY, "not supported"),
    ),
    Case(
        "codec-v2-pickle-filter",
        "6",
        array_case(setter("filters", [{"id": "pickle"}])),
        (V2_ARRAY, "'pickle'", "not supported"),
    ),
    Case(
        "codec-v2-pickle-compressor",
        "6",
        array_case(setter("compressor", {"id": "pickle"})),
        (V2_ARRAY, "'pickle'", "not supported"),
    ),
    Case(
        "codec-v2-unknown",
        "6",
        array_case(setter("compressor", {"id": "evil"})),
        (V2_ARRAY, "'evil'", "not supported"),
    ),
    Case(
        "codec-v3-pickle",
        "6",
        array_case(lambda d: d["codecs"].append({"name": "numcodecs.pickle"}), 3),
        (V3_ARRAY, "'numcodecs.pickle'", "not supported"),
    ),
    Case(
        "codec-v3-unknown",
        "6",
        array_case(lambda d: d["codecs"].append({"name": "evil"}), 3),
        (V3_ARRAY, "'evil'", "not supported"),
    ),
    Case(
        "codec-v3-storage-transformer",
        "6",
        array_case(setter("storage_transformers", [{"name": "evil"}]), 3),
        (V3_ARRAY, "storage_transformers"),
    ),
    # Chunk keys that could name files outside the level.
    Case(
        "v2-dimension-separator-dotdot",
        "6",
        array_case(setter("dimension_separator", "/../../")),
        (V2_ARRAY, "dimension_separator", "'/../../'"),
    ),
    Case(
        "v2-dimension-separator-backslash",
        "6",
        array_case(setter("dimension_separator", "\\")),
        (V2_ARRAY, "dimension_separator"),
    ),
    Case(
        "v3-chunk-key-separator-dotdot",
        "6",
        array_case(
            setter(
                "chunk_key_encoding", {"name": "default", "configuration": {"separator": "/../"}}
            ),
            3,
        ),
        (V3_ARRAY, "chunk_key_encoding", "'/../'"),
    ),
    Case(
        "v3-chunk-key-encoding-unknown",
        "6",
        array_case(setter("chunk_key_encoding", {"name": "../evil"}), 3),
        (V3_ARRAY, "chunk_key_encoding"),
    ),
    # Issue 5: the bad-input table.
    Case("missing-path", "5", not_an_image("missing"), ("{root}", "does not exist")),
    Case(
        "plain-folder",
        "5",
        not_an_image("folder"),
        ("{root}", "not a zarr group", "pass the folder"),
    ),
    Case("a-file", "5", not_an_image("file"), ("{root}", "is a file", "pass the image group")),
    Case(
        "plate-not-image",
        "5",
        not_an_image("plate"),
        ("{root}", "is a plate", "not an image", "pass one of its images"),
        # The command line builds whole plates: this one lists no well, so no image.
        cli_words=("{root}", "is a plate", "holds no OME-Zarr image"),
    ),
    Case(
        "metadata-points-to-missing-array",
        "5",
        missing_array,
        ("'0'", "holds no zarr array", "restore"),
    ),
    Case("array-1d", "5", dimensions_case(1), ("1 dimensions", "2 to 5")),
    Case("array-6d", "5", dimensions_case(6), ("6 dimensions", "2 to 5")),
    Case(
        "factor-0",
        "5",
        image_case,
        ("coarsening_xy", ">= 2", "got 0"),
        kwargs={"coarsening_xy": 0},
    ),
    Case(
        "factor-1",
        "5",
        image_case,
        ("coarsening_xy", ">= 2", "got 1"),
        kwargs={"coarsening_xy": 1},
    ),
    Case(
        "factor-minus-2",
        "5",
        image_case,
        ("coarsening_xy", ">= 2", "got -2"),
        kwargs={"coarsening_xy": -2},
    ),
    Case(
        "factor-2.5",
        "5",
        image_case,
        ("coarsening_xy", "integer", "2.5"),
        kwargs={"coarsening_xy": 2.5},
        cli=("--factor", "2.5"),
        cli_words=("--factor", "'2.5'", "napari-pyramids build --help"),
    ),
    Case(
        "factor-true",
        "5",
        image_case,
        ("coarsening_xy", "integer", "True"),
        kwargs={"coarsening_xy": True},
        cli=API_ONLY,
    ),
    Case(
        "factor-string",
        "5",
        image_case,
        ("coarsening_xy", "integer", "'2'"),
        kwargs={"coarsening_xy": "2"},
        cli=API_ONLY,
    ),
    Case(
        "z-factor-without-z",
        "5",
        image_case,
        ("coarsening_z=2", "no Z axis", "coarsening_z=1"),
        kwargs={"coarsening_z": 2},
        error=NoZAxisError,
    ),
    Case(
        "too-many-levels",
        "5",
        image_case,
        ("num_levels=20", "too many", "num_levels <= 7"),
        kwargs={"num_levels": 20},
        error=TooManyLevelsError,
    ),
    Case("levels-0", "5", image_case, ("num_levels", ">= 1", "got 0"), kwargs={"num_levels": 0}),
    Case(
        "levels-minus-1",
        "5",
        image_case,
        ("num_levels", ">= 1", "got -1"),
        kwargs={"num_levels": -1},
    ),
    Case(
        "chunksize-wrong-length",
        "5",
        image_case,
        ("chunksize", "3 entries", "2 axes", "one chunk length per axis"),
        kwargs={"chunksize": (1, 16, 16)},
    ),
    Case(
        "chunksize-zero",
        "5",
        image_case,
        ("chunksize", ">= 1", "got 0"),
        kwargs={"chunksize": (0, 16)},
    ),
    Case(
        "chunksize-negative",
        "5",
        image_case,
        ("chunksize", ">= 1", "got -4"),
        kwargs={"chunksize": (-4, 16)},
    ),
    Case(
        "method-unknown",
        "5",
        image_case,
        ("'average'", "choose one of", "mean"),
        kwargs={"method": "average"},
        cli_words=("--method", "'average'", "mean"),
    ),
    Case(
        "edge-unknown",
        "5",
        image_case,
        ("'wrap'", "trim", "keep"),
        kwargs={"edge": "wrap"},
        cli_words=("--edge", "'wrap'", "trim"),
    ),
    Case(
        "mean-on-labels-metadata",
        "5",
        labels_case(False),
        ("label image", "mean", "mode"),
        kwargs={"method": "mean"},
        error=LabelMethodError,
    ),
    Case(
        "median-on-labels-metadata-v3",
        "5",
        labels_case(False, 3),
        ("label image", "median", "mode"),
        kwargs={"method": "median"},
        error=LabelMethodError,
    ),
    Case(
        "mean-on-labels-group",
        "5",
        labels_case(True),
        ("label image", "mean", "mode"),
        kwargs={"method": "mean"},
        error=LabelMethodError,
    ),
    Case(
        "mean-on-labels-group-v3",
        "5",
        labels_case(True, 3),
        ("label image", "mean", "mode"),
        kwargs={"method": "mean"},
        error=LabelMethodError,
    ),
    Case(
        "aggregation-function-and-method",
        "5",
        image_case,
        ("method", "aggregation_function", "not both"),
        kwargs={"method": "max", "aggregation_function": np.mean},
        cli=API_ONLY,
    ),
    Case(
        "aggregation-function-not-callable",
        "5",
        image_case,
        ("aggregation_function", "callable"),
        kwargs={"aggregation_function": "mean"},
        cli=API_ONLY,
    ),
    Case(
        "open-array-kwargs-unsupported",
        "5",
        image_case,
        ("open_array_kwargs", "'compressor'", "supported keys"),
        kwargs={"open_array_kwargs": {"compressor": None}},
        cli=API_ONLY,
    ),
    Case(
        "open-array-kwargs-separator-on-v3",
        "5",
        lambda tmp: crafted(image(tmp, 3), tmp),
        ("dimension_separator", "zarr v2 only"),
        kwargs={"open_array_kwargs": {"dimension_separator": "."}},
        cli=API_ONLY,
    ),
    Case(
        "overwrite-not-bool",
        "5",
        image_case,
        ("overwrite", "True or False", "'yes'"),
        kwargs={"overwrite": "yes"},
        cli=API_ONLY,
    ),
    Case(
        "memory-budget-garbage",
        "5",
        image_case,
        ("memory_budget", "'lots'", "512MiB"),
        kwargs={"memory_budget": "lots"},
    ),
    Case(
        "memory-budget-too-small",
        "5",
        image_case,
        ("memory_budget", "minimum", "at least"),
        kwargs={"memory_budget": "1MiB"},
    ),
    Case("workers-0", "5", image_case, ("workers", ">= 1", "got 0"), kwargs={"workers": 0}),
    # URLs refused before any request (tests/s3 builds on URLs against a local server).
    Case(
        "url-http",
        "5",
        url_case("https://example.org/img.zarr#level0"),
        ("{root}", "no '?' query or '#' fragment", "drop it"),
    ),
    Case(
        "url-s3",
        "5",
        url_case("s3://bucket/plate/../img.zarr"),
        ("{root}", "'..' component", "pass the image group's plain url"),
    ),
    Case(
        "url-file",
        "5",
        url_case("file:///tmp/img.zarr"),
        ("{root}", "scheme 'file' is not supported", "or a local path"),
    ),
    Case("zarrurl-empty", "5", url_case(""), ("zarrurl is empty",)),
    Case(
        "zarrurl-nul",
        "5",
        url_case("img\x00.zarr"),
        ("zarrurl", "control character"),
        cli=API_ONLY,
    ),
    Case(
        "zarrurl-not-a-path",
        "5",
        lambda tmp: Crafted(42, (image(tmp),)),
        ("zarrurl", "int"),
        cli=API_ONLY,
    ),  # type: ignore[arg-type]
    Case(
        "zarrurl-is-v2-array", "5", array_as_zarrurl(2), ("{root}", "zarr array", "parent folder")
    ),
    Case(
        "zarrurl-is-v3-array", "5", array_as_zarrurl(3), ("{root}", "zarr array", "parent folder")
    ),
    Case(
        "existing-listed-level",
        "5",
        existing_level_case(True),
        ("'1'", "already exists", "overwrite=True"),
        cli_words=("'1'", "already exists", "--overwrite"),
        error=LevelExistsError,
    ),
    Case(
        "existing-unlisted-array",
        "5",
        existing_level_case(False),
        ("'1'", "already exists", "overwrite=True"),
        cli_words=("'1'", "already exists", "--overwrite"),
        error=LevelExistsError,
    ),
    # Overwrite replaces pyramid levels, nothing else of the user's.
    Case(
        "user-folder-at-new-level-path",
        "5",
        user_data_at("1"),
        ("{target}", "not a zarr array", "move it away"),
    ),
    Case(
        "user-folder-at-new-level-path-overwrite",
        "5",
        user_data_at("1"),
        ("{target}", "not a zarr array", "move it away"),
        kwargs={"overwrite": True},
    ),
    Case(
        "user-file-at-new-level-path-overwrite",
        "5",
        user_data_at("1", as_file=True),
        ("{target}", "not a zarr array", "move it away"),
        kwargs={"overwrite": True},
    ),
    Case(
        "metadata-lists-labels-group-as-level-overwrite",
        "6",
        user_data_at("labels", listed=True),
        ("{target}", "not a zarr array", "fix the multiscales metadata"),
        kwargs={"overwrite": True},
    ),
    Case(
        "file-where-new-level-folder-goes",
        "5",
        user_data_at("scale1", as_file=True, level_path="scale0/image"),
        ("'scale1/image'", "{target}", "is a file", "move it away"),
        kwargs={"overwrite": True},
    ),
]


_ids = [case.id for case in CASES]
assert len(_ids) == len(set(_ids)), "case ids must be unique"


# --- crafted images that must build, harmlessly ---------------------------------------------


@dataclass(frozen=True)
class Harmless:
    """A crafted image that builds: ``check(root, tmp)`` inspects the result."""

    id: str
    build: Callable[[Path], Crafted]
    check: Callable[[Path, Path], None]
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    # Words of the warning the build must give about a leftover it leaves alone.
    warns: str | None = None


def folder_snapshot(folder: Path) -> dict[str, str]:
    """Hashes of every file and link inside ``folder`` (tree_snapshot covers a parent)."""
    return tree_snapshot(folder / "any-child")


def _real_folder(path: Path) -> None:
    assert path.is_dir(), path
    assert not path.is_symlink(), path


def level0_link(tmp: Path) -> Crafted:
    """Level 0's folder is a link to a copy of level 0 outside the image."""
    root = image(tmp)
    out = outside(tmp)
    os.rename(root / "0", out / "level0")
    os.symlink(out / "level0", root / "0")
    return crafted(root, tmp)


def level0_metadata_link(zarr_format: int) -> Callable:
    def build(tmp: Path) -> Crafted:
        root = image(tmp, zarr_format)
        out = outside(tmp)
        name = ".zarray" if zarr_format == 2 else "zarr.json"
        os.rename(root / "0" / name, out / name)
        os.symlink(out / name, root / "0" / name)
        return crafted(root, tmp)

    return build


def replaced_level_with_inner_link(tmp: Path) -> Crafted:
    """An existing level 1 whose metadata file links outside: replacing it drops the link."""
    root = image(tmp)
    out = outside(tmp)
    add_levels(root, "1")
    (root / "1").mkdir()
    os.symlink(out / "secret.txt", root / "1" / ".zarray")
    os.symlink(out / "victim", root / "1" / "0")
    return crafted(root, tmp)


def leftover_build_link(tmp: Path) -> Crafted:
    root = image(tmp)
    out = outside(tmp)
    os.symlink(out / "victim", root / ".napari-pyramids-build-0123456789ab")
    return crafted(root, tmp)


def forged_journal(**entries: Any) -> Callable:
    """A leftover build folder whose journal claims it moved or created files outside."""

    def build(tmp: Path) -> Crafted:
        root = image(tmp)
        out = outside(tmp)
        secret = out / "secret.txt"
        digest = hashlib.sha256(secret.read_bytes()).hexdigest()
        folder = root / ".napari-pyramids-build-0123456789ab"
        (folder / "aside" / "0").mkdir(parents=True)
        (folder / "aside" / "0" / "planted.txt").write_text("planted\n")
        journal = {
            "tool": "napari-pyramids",
            "build": "0123456789ab",
            "pid": 1,
            "host": "elsewhere",
            "phase": "publishing",
            "metadata_file": ".zattrs",
            "original": (root / ".zattrs").read_text(),
            "intermediate_sha256": None,
            "final_sha256": None,
            "placed": [],
            "moved_aside": [],
            "created_dirs": [],
            "created_files": [],
        }
        for key, value in entries.items():
            journal[key] = json.loads(
                json.dumps(value).replace("OUTSIDE", str(out)).replace("DIGEST", digest)
            )
        if journal["metadata_file"] != ".zattrs":
            journal["intermediate_sha256"] = digest
            journal["original"] = "overwritten by a forged journal\n"
        write_doc(folder / "journal.json", journal)
        return crafted(root, tmp)

    return build


def journal_link_to_dev_zero(tmp: Path) -> Crafted:
    root = image(tmp)
    folder = root / ".napari-pyramids-build-0123456789ab"
    folder.mkdir()
    os.symlink("/dev/zero", folder / "journal.json")
    return crafted(root, tmp)


def lookalike_level0(path: str) -> Callable:
    def build(tmp: Path) -> Crafted:
        root = image(tmp, level_path=path)
        return crafted(root, tmp)

    return build


def _check_level0_outside(root: Path, tmp: Path) -> None:
    assert (root / "0").is_symlink()
    _real_folder(root / "1")
    assert level_paths(root) == ["0", "1"]


def _check_new_level_inside(root: Path, tmp: Path) -> None:
    new = level_paths(root)[1]
    _real_folder(root / new)
    assert (root / new).resolve().parent == root.resolve()


def _check_level0_named_one(root: Path, tmp: Path) -> None:
    assert level_paths(root) == ["1", "2", "3"]
    for path in ("1", "2", "3"):
        _real_folder(root / path)


def _check_replaced(root: Path, tmp: Path) -> None:
    _real_folder(root / "1")
    assert not (root / "1" / ".zarray").is_symlink()
    assert level_paths(root) == ["0", "1"]


def _check_only_leftover(root: Path, tmp: Path) -> None:
    assert level_paths(root) == ["0", "1"]
    leftovers = [p.name for p in root.iterdir() if p.name.startswith(".napari-pyramids-build")]
    assert leftovers == [".napari-pyramids-build-0123456789ab"]


HARMLESS: list[Harmless] = [
    Harmless("level0-folder-links-outside", level0_link, _check_level0_outside),
    Harmless("level0-zarray-links-outside", level0_metadata_link(2), _check_new_level_inside),
    Harmless(
        "level0-v3-zarr-json-links-outside", level0_metadata_link(3), _check_new_level_inside
    ),
    Harmless(
        "level0-named-1-is-never-replaced",
        lookalike_level0("1"),
        _check_level0_named_one,
        {"num_levels": 3, "overwrite": True},
    ),
    Harmless(
        "replaced-level-holds-links-outside",
        replaced_level_with_inner_link,
        _check_replaced,
        {"overwrite": True},
    ),
    Harmless(
        "leftover-build-folder-is-a-link",
        leftover_build_link,
        _check_only_leftover,
        warns="is not a build folder of ours; left alone",
    ),
    Harmless(
        "forged-journal-moves-aside-folder-outside",
        forged_journal(moved_aside=[["../../outside/planted", "aside/0"]]),
        _check_only_leftover,
        warns="so no napari-pyramids build wrote it; left alone",
    ),
    Harmless(
        "forged-journal-absolute-move",
        forged_journal(moved_aside=[["OUTSIDE/planted", "aside/0"]]),
        _check_only_leftover,
        warns="so no napari-pyramids build wrote it; left alone",
    ),
    Harmless(
        "forged-journal-deletes-created-file-outside",
        forged_journal(created_files=[["../../outside/secret.txt", "DIGEST"]]),
        _check_only_leftover,
        warns="so no napari-pyramids build wrote it; left alone",
    ),
    Harmless(
        "forged-journal-restores-metadata-outside",
        forged_journal(metadata_file="../../outside/secret.txt"),
        _check_only_leftover,
        warns="so no napari-pyramids build wrote it; left alone",
    ),
    Harmless(
        "forged-journal-removes-dirs-outside",
        forged_journal(created_dirs=["../../outside/empty"]),
        _check_only_leftover,
        warns="so no napari-pyramids build wrote it; left alone",
    ),
    Harmless(
        "forged-journal-wrong-types",
        forged_journal(placed="everything", original=7),
        _check_only_leftover,
        warns="so no napari-pyramids build wrote it; left alone",
    ),
    Harmless(
        "journal-links-to-dev-zero",
        journal_link_to_dev_zero,
        _check_only_leftover,
        warns="has no journal of a napari-pyramids build; left alone",
    ),
    # The labels group around an image is only a hint: malformed, it just says "not labels".
    Harmless(
        "labels-parent-attributes-is-a-list",
        labels_parent_case({"zarr_format": 3, "node_type": "group", "attributes": []}),
        _check_new_level_inside,
    ),
    Harmless(
        "labels-parent-ome-is-a-string",
        labels_parent_case({"zarr_format": 3, "node_type": "group", "attributes": {"ome": "x"}}),
        _check_new_level_inside,
    ),
    Harmless("level0-one-dot-leaders", lookalike_level0("\u2024\u2024"), _check_new_level_inside),
    Harmless("level0-fullwidth-digit", lookalike_level0("\uff10"), _check_new_level_inside),
    Harmless("level0-division-slash", lookalike_level0("a\u2215b"), _check_new_level_inside),
]
