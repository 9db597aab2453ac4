"""What differs between zarr v2 / OME-NGFF 0.4 and zarr v3 / OME-NGFF 0.5, in one place.

One class per format, as ome-zarr-py models NGFF versions: where the group's attributes and
the NGFF keys live, where the version is written, how array metadata is spelled and checked,
how chunk keys are formed, and what the metadata of a new level looks like. Everything else
asks ``image.format`` instead of comparing ``zarr_format`` with 2 or 3.
"""

from __future__ import annotations

import abc
import copy
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import PyramidError

_V3_DTYPES = {
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64",
}  # fmt: skip
# Codecs that decode chunks into Python objects; pickle runs arbitrary code while doing so.
_OBJECT_CODECS = {"pickle", "msgpack2", "json2", "vlen-utf8", "vlen-bytes", "vlen-array"}


class Format(abc.ABC):
    """A zarr format with the OME-NGFF version stored in it."""

    zarr_format: int
    ngff_version: str
    # The file holding the group's attributes (where the multiscales metadata is written).
    group_file: str
    # The file holding an array's metadata.
    array_file: str
    # The keys zarr defines in an array document: the only ones copied into new levels.
    array_keys: frozenset[str]
    # A file of array attributes beside the array metadata (read, as zarr reads it).
    array_attributes_file: str | None
    # Chunk codecs receive the chunk's bytes (v3) rather than the typed array (v2).
    codecs_take_bytes: bool
    # The file of a group holding the metadata of every node below it, copied there by
    # zarr-python's ``consolidate_metadata`` (ngff-zarr does so by default).
    consolidated_file: str

    @abc.abstractmethod
    def attributes(self, document: dict[str, Any]) -> Any:
        """The user attributes of a group metadata document."""

    @abc.abstractmethod
    def ngff(self, attributes: dict[str, Any], where: str) -> dict[str, Any]:
        """Where the NGFF keys live in the attributes (checked)."""

    @abc.abstractmethod
    def ngff_view(self, attributes: dict[str, Any]) -> dict[str, Any]:
        """Where the NGFF keys live, for reading only ({} when absent)."""

    @abc.abstractmethod
    def multiscale_version(self, ngff: dict[str, Any], multiscale: dict[str, Any]) -> Any:
        """The NGFF version a group declares."""

    @abc.abstractmethod
    def new_multiscale(self, name: str, axes: list[dict[str, Any]]) -> dict[str, Any]:
        """A multiscales entry for a group that had none."""

    @abc.abstractmethod
    def ngff_of_document(self, document: dict[str, Any]) -> dict[str, Any]:
        """The NGFF dictionary inside a copy of a group document, created if missing."""

    @abc.abstractmethod
    def empty_group(self) -> dict[str, Any]:
        """The group metadata document of a group without attributes."""

    @abc.abstractmethod
    def group_files(self) -> list[tuple[str, dict[str, Any]]]:
        """The files that make a folder a zarr group (for parents of nested level paths)."""

    @abc.abstractmethod
    def array_layout(
        self, doc: dict[str, Any], where: str, ndim: int
    ) -> tuple[np.dtype, tuple[int, ...], tuple[int, ...] | None]:
        """dtype, chunks and shards of an array document, checked strictly."""

    @abc.abstractmethod
    def key_encoding(self, doc: dict[str, Any]) -> tuple[str, str]:
        """(prefix, separator) of chunk keys, from a document array_layout accepted."""

    @abc.abstractmethod
    def with_layout(
        self,
        doc: dict[str, Any],
        chunks: Sequence[int],
        shards: Sequence[int] | None,
        axis_names: Sequence[str],
        options: Mapping[str, Any],
    ) -> None:
        """Give a copy of level 0's document a new level's chunk layout, in place."""

    @abc.abstractmethod
    def codec_summary(self, doc: dict[str, Any]) -> str:
        """A short human description of how chunks are encoded."""

    # Consolidated metadata: one flat mapping from keys below a group to metadata documents.

    @abc.abstractmethod
    def consolidated_entries(self, document: Any) -> dict[str, Any] | None:
        """The entries of a group's consolidated metadata document, or None if it has none."""

    @abc.abstractmethod
    def with_consolidated_entries(
        self, document: dict[str, Any], entries: dict[str, Any]
    ) -> dict[str, Any]:
        """A copy of a consolidated metadata document holding ``entries`` instead."""

    @abc.abstractmethod
    def group_entries(
        self,
        node: str,
        entries: dict[str, Any],
        before: dict[str, Any],
        after: dict[str, Any],
    ) -> dict[str, Any]:
        """The entries of the group at ``node`` once its document went from before to after."""

    @abc.abstractmethod
    def array_entries(
        self,
        node: str,
        like: str,
        entries: dict[str, Any],
        like_document: dict[str, Any],
        document: dict[str, Any],
    ) -> dict[str, Any]:
        """The entries of a new array at ``node`` whose document was made from the array
        ``like``'s (``like_document``): ``like``'s entries with the same changes."""

    @abc.abstractmethod
    def new_group_entries(
        self, node: str, like: str | None, entries: dict[str, Any], document: dict[str, Any]
    ) -> dict[str, Any]:
        """The entries of a new group at ``node`` (``document`` is its group file), in the
        style of the group ``like``'s entries."""

    def group_document_with(
        self, document: dict[str, Any], multiscale: dict[str, Any]
    ) -> dict[str, Any]:
        """A copy of a group document with its first multiscales entry replaced."""
        document = copy.deepcopy(document)
        ngff = self.ngff_of_document(document)
        if "multiscales" in ngff:
            ngff["multiscales"] = [multiscale, *ngff["multiscales"][1:]]
        else:
            ngff["multiscales"] = [multiscale]
        return document

    def level_document(
        self,
        level0: dict[str, Any],
        shape: Sequence[int],
        chunks: Sequence[int],
        shards: Sequence[int] | None,
        axis_names: Sequence[str],
        options: Mapping[str, Any],
    ) -> dict[str, Any]:
        """Level 0's metadata document with the shape and chunk layout of a new level."""
        # Only the keys zarr defines: anything else in level 0's document is not ours to
        # copy into every level (and a stranger's padding there would be copied per level).
        doc = copy.deepcopy({k: v for k, v in level0.items() if k in self.array_keys})
        doc["shape"] = list(shape)
        if "fill_value" in options:
            doc["fill_value"] = options["fill_value"]
        self.with_layout(doc, chunks, shards, axis_names, options)
        return doc


class FormatV04(Format):
    """zarr v2 with OME-NGFF 0.4: ``.zattrs``/``.zgroup``/``.zarray``."""

    zarr_format = 2
    ngff_version = "0.4"
    group_file = ".zattrs"
    array_file = ".zarray"
    array_keys = frozenset({
        "zarr_format", "shape", "chunks", "dtype", "compressor", "fill_value", "order",
        "filters", "dimension_separator",
    })  # fmt: skip
    array_attributes_file = ".zattrs"
    codecs_take_bytes = False
    consolidated_file = ".zmetadata"

    def attributes(self, document: dict[str, Any]) -> Any:
        return document

    def ngff_view(self, attributes: dict[str, Any]) -> dict[str, Any]:
        return attributes

    def ngff(self, attributes: dict[str, Any], where: str) -> dict[str, Any]:
        return attributes

    def multiscale_version(self, ngff: dict[str, Any], multiscale: dict[str, Any]) -> Any:
        return multiscale.get("version")

    def new_multiscale(self, name: str, axes: list[dict[str, Any]]) -> dict[str, Any]:
        return {"version": self.ngff_version, "name": name, "axes": axes}

    def ngff_of_document(self, document: dict[str, Any]) -> dict[str, Any]:
        return document

    def empty_group(self) -> dict[str, Any]:
        return {}

    def group_files(self) -> list[tuple[str, dict[str, Any]]]:
        return [(".zgroup", {"zarr_format": 2})]

    def array_layout(
        self, doc: dict[str, Any], where: str, ndim: int
    ) -> tuple[np.dtype, tuple[int, ...], tuple[int, ...] | None]:
        if doc.get("zarr_format") != 2:
            raise PyramidError(f"{where}: zarr_format must be 2. Fix the metadata.")
        chunks = _int_list(doc.get("chunks"), f"{where}: chunks", 1)
        dtype = _v2_dtype(doc.get("dtype"), where)
        if doc.get("order", "C") not in ("C", "F"):
            raise PyramidError(f"{where}: order must be 'C' or 'F'. Fix the metadata.")
        separator = doc.get("dimension_separator")
        if separator not in (None, ".", "/"):
            # The separator joins chunk indices into file names: '/../' would climb out.
            raise PyramidError(
                f"{where}: dimension_separator {separator!r:.40} is not '.' or '/'. "
                "Fix the metadata."
            )
        filters = doc.get("filters")
        if filters is not None and not isinstance(filters, list):
            raise PyramidError(f"{where}: filters must be a list or null. Fix the metadata.")
        for codec in [*(filters or []), doc.get("compressor")]:
            if codec is not None:
                _check_codec(codec, "id", where)
        return dtype, chunks, None

    def key_encoding(self, doc: dict[str, Any]) -> tuple[str, str]:
        return "", doc.get("dimension_separator") or "."

    def with_layout(
        self,
        doc: dict[str, Any],
        chunks: Sequence[int],
        shards: Sequence[int] | None,
        axis_names: Sequence[str],
        options: Mapping[str, Any],
    ) -> None:
        doc["chunks"] = list(chunks)
        if "dimension_separator" in options:
            doc["dimension_separator"] = options["dimension_separator"]

    def codec_summary(self, doc: dict[str, Any]) -> str:
        comp = doc.get("compressor")
        name = str(comp.get("id", "?")) if isinstance(comp, dict) else "none"
        if isinstance(comp, dict) and comp.get("cname"):
            name += f"-{comp['cname']}"
        filters = doc.get("filters") or []
        names = [str(f.get("id", "?")) for f in filters if isinstance(f, dict)]
        return "+".join([*names, name])

    def consolidated_entries(self, document: Any) -> dict[str, Any] | None:
        entries = _member(document, "metadata")
        return entries if isinstance(entries, dict) else None

    def with_consolidated_entries(
        self, document: dict[str, Any], entries: dict[str, Any]
    ) -> dict[str, Any]:
        # In zarr-python's order: the group's own files, then node by node, parents before
        # children. zarr-python reads the nodes of one group back correctly only when they
        # are listed together (it groups consecutive keys).
        def order(key: str) -> tuple[int, str, bool]:
            node, _, name = key.rpartition("/")
            if not node:
                return -1, "", name != ".zgroup"
            return (*_consolidated_order(node), name != ".zattrs")

        return {**document, "metadata": dict(sorted(entries.items(), key=lambda i: order(i[0])))}

    def group_entries(
        self,
        node: str,
        entries: dict[str, Any],
        before: dict[str, Any],
        after: dict[str, Any],
    ) -> dict[str, Any]:
        # A v2 image's group document is its .zattrs.
        return {_key(node, ".zattrs"): copy.deepcopy(after)}

    def array_entries(
        self,
        node: str,
        like: str,
        entries: dict[str, Any],
        like_document: dict[str, Any],
        document: dict[str, Any],
    ) -> dict[str, Any]:
        template = entries.get(_key(like, ".zarray"))
        found = {_key(node, ".zarray"): replay(template, like_document, document)}
        # New levels have no attributes; zarr-python lists an empty .zattrs for every node.
        if _key(like, ".zattrs") in entries:
            found[_key(node, ".zattrs")] = {}
        return found

    def new_group_entries(
        self, node: str, like: str | None, entries: dict[str, Any], document: dict[str, Any]
    ) -> dict[str, Any]:
        template = None if like is None else entries.get(_key(like, ".zgroup"))
        found = {_key(node, ".zgroup"): _marked_like(document, template)}
        if like is not None and _key(like, ".zattrs") in entries:
            found[_key(node, ".zattrs")] = {}
        return found


class FormatV05(Format):
    """zarr v3 with OME-NGFF 0.5: ``zarr.json``, the NGFF keys under ``attributes.ome``."""

    zarr_format = 3
    ngff_version = "0.5"
    group_file = "zarr.json"
    array_file = "zarr.json"
    array_keys = frozenset({
        "zarr_format", "node_type", "shape", "data_type", "chunk_grid", "chunk_key_encoding",
        "fill_value", "codecs", "attributes", "storage_transformers", "dimension_names",
    })  # fmt: skip
    array_attributes_file = None
    codecs_take_bytes = True
    consolidated_file = "zarr.json"

    def attributes(self, document: dict[str, Any]) -> Any:
        return document.get("attributes", {})

    def ngff_view(self, attributes: dict[str, Any]) -> dict[str, Any]:
        return attributes.get("ome", {})

    def ngff(self, attributes: dict[str, Any], where: str) -> dict[str, Any]:
        if "ome" in attributes:
            if not isinstance(attributes["ome"], dict):
                raise PyramidError(f"{where}: 'ome' must be a JSON object")
            return attributes["ome"]
        if "multiscales" in attributes:
            raise PyramidError(
                f"{where}: a zarr v3 group with NGFF 0.4-style 'multiscales' at the top of its "
                "attributes; NGFF 0.5 keeps them under 'ome'. Fix the metadata."
            )
        return attributes

    def multiscale_version(self, ngff: dict[str, Any], multiscale: dict[str, Any]) -> Any:
        return ngff.get("version")

    def new_multiscale(self, name: str, axes: list[dict[str, Any]]) -> dict[str, Any]:
        return {"name": name, "axes": axes}

    def ngff_of_document(self, document: dict[str, Any]) -> dict[str, Any]:
        document.setdefault("attributes", {})
        return document["attributes"].setdefault("ome", {"version": self.ngff_version})

    def empty_group(self) -> dict[str, Any]:
        return {"zarr_format": 3, "node_type": "group", "attributes": {}}

    def group_files(self) -> list[tuple[str, dict[str, Any]]]:
        return [("zarr.json", self.empty_group())]

    def array_layout(
        self, doc: dict[str, Any], where: str, ndim: int
    ) -> tuple[np.dtype, tuple[int, ...], tuple[int, ...] | None]:
        if doc.get("zarr_format") != 3 or doc.get("node_type") != "array":
            raise PyramidError(f"{where}: needs zarr_format 3 and node_type 'array'")
        dtype = _v3_dtype(doc.get("data_type"), where)
        grid = doc.get("chunk_grid")
        if not isinstance(grid, dict) or grid.get("name") != "regular":
            raise PyramidError(f"{where}: only a 'regular' chunk_grid is supported")
        outer = _int_list(
            _member(grid.get("configuration"), "chunk_shape"),
            f"{where}: chunk_grid chunk_shape",
            1,
        )
        encoding = doc.get("chunk_key_encoding")
        configuration = _member(encoding, "configuration") or {}
        if (
            not isinstance(encoding, dict)
            or encoding.get("name") not in ("default", "v2")
            or not isinstance(configuration, dict)
            or configuration.get("separator", "/") not in (".", "/")
        ):
            # The separator joins chunk indices into file names: '/../' would climb out.
            raise PyramidError(
                f"{where}: chunk_key_encoding {encoding!r:.80} is not 'default' or 'v2' with a "
                "'.' or '/' separator. Fix the metadata."
            )
        if doc.get("storage_transformers") not in (None, []):
            raise PyramidError(
                f"{where}: storage_transformers are not supported; convert the array to plain "
                "zarr v3 (no transformers) first."
            )
        chunks, shards = outer, None
        for codec in _v3_codecs(doc.get("codecs"), where):
            _check_codec(codec, "name", where)
            if codec.get("name") == "sharding_indexed":
                config = codec.get("configuration")
                if not isinstance(config, dict):
                    raise PyramidError(
                        f"{where}: sharding_indexed needs a configuration. Fix the metadata."
                    )
                chunks = _int_list(config.get("chunk_shape"), f"{where}: inner chunks", 1)
                shards = outer
                for key in ("codecs", "index_codecs"):
                    for inner in _v3_codecs(config.get(key, []), where):
                        _check_codec(inner, "name", where)
        names = doc.get("dimension_names")
        if names is not None and (
            not isinstance(names, list)
            or len(names) != ndim
            or not all(n is None or isinstance(n, str) for n in names)
        ):
            raise PyramidError(
                f"{where}: dimension_names must list one name per dimension. Fix the metadata."
            )
        return dtype, chunks, shards

    def key_encoding(self, doc: dict[str, Any]) -> tuple[str, str]:
        encoding = doc["chunk_key_encoding"]
        separator = (encoding.get("configuration") or {}).get("separator")
        if encoding["name"] == "v2":
            return "", separator or "."
        separator = separator or "/"
        return f"c{separator}", separator

    def with_layout(
        self,
        doc: dict[str, Any],
        chunks: Sequence[int],
        shards: Sequence[int] | None,
        axis_names: Sequence[str],
        options: Mapping[str, Any],
    ) -> None:
        doc["attributes"] = {}
        outer = shards if shards is not None else chunks
        doc["chunk_grid"] = {"name": "regular", "configuration": {"chunk_shape": list(outer)}}
        if shards is not None:
            for codec in doc["codecs"]:
                if codec.get("name") == "sharding_indexed":
                    codec["configuration"]["chunk_shape"] = list(chunks)
        if not doc.get("dimension_names"):
            doc["dimension_names"] = list(axis_names)

    def codec_summary(self, doc: dict[str, Any]) -> str:
        names = []
        for codec in doc.get("codecs", []):
            if codec.get("name") == "sharding_indexed":
                inner = codec["configuration"].get("codecs", [])
                names.append("shard[" + "+".join(str(c.get("name")) for c in inner) + "]")
            else:
                names.append(str(codec.get("name")))
        return "+".join(names)

    def consolidated_entries(self, document: Any) -> dict[str, Any] | None:
        entries = _member(_member(document, "consolidated_metadata"), "metadata")
        return entries if isinstance(entries, dict) else None

    def with_consolidated_entries(
        self, document: dict[str, Any], entries: dict[str, Any]
    ) -> dict[str, Any]:
        # zarr-python lists parents before children, names case-insensitively in order.
        ordered = dict(sorted(entries.items(), key=lambda item: _consolidated_order(item[0])))
        marker = {**document["consolidated_metadata"], "metadata": ordered}
        return {**document, "consolidated_metadata": marker}

    def group_entries(
        self,
        node: str,
        entries: dict[str, Any],
        before: dict[str, Any],
        after: dict[str, Any],
    ) -> dict[str, Any]:
        # A group does not list itself; a parent lists it without its own consolidation.
        if not node or node not in entries:
            return {}
        plain_before, plain_after = (
            {k: v for k, v in doc.items() if k != "consolidated_metadata"}
            for doc in (before, after)
        )
        return {node: replay(entries[node], plain_before, plain_after)}

    def array_entries(
        self,
        node: str,
        like: str,
        entries: dict[str, Any],
        like_document: dict[str, Any],
        document: dict[str, Any],
    ) -> dict[str, Any]:
        return {node: replay(entries.get(like), like_document, document)}

    def new_group_entries(
        self, node: str, like: str | None, entries: dict[str, Any], document: dict[str, Any]
    ) -> dict[str, Any]:
        template = None if like is None else entries.get(like)
        return {node: _marked_like(document, template)}


FORMATS: dict[int, Format] = {2: FormatV04(), 3: FormatV05()}


def format_of(zarr_format: int) -> Format:
    """The format class of zarr format 2 or 3."""
    return FORMATS[zarr_format]


def replay(template: Any, before: Any, after: Any) -> Any:
    """``template`` with the changes that turned ``before`` into ``after``.

    A consolidated entry is the document as its writer normalised it (defaults spelled out,
    keys added): a new level's entry is level 0's entry with the very edits that made the
    new level's document from level 0's, so it reads as that writer would have written it.
    """
    if template is None or before == after:
        return copy.deepcopy(after if template is None else template)
    if isinstance(template, dict) and isinstance(before, dict) and isinstance(after, dict):
        kept = (k for k in template if k in after or k not in before)
        result = {k: copy.deepcopy(template[k]) for k in kept}
        for key, value in after.items():
            if key not in before:
                result[key] = copy.deepcopy(value)
            elif before[key] != value:
                result[key] = replay(template.get(key), before[key], value)
        return result
    if (
        isinstance(template, list)
        and isinstance(before, list)
        and isinstance(after, list)
        and len(template) == len(before) == len(after)
    ):
        return [replay(t, b, a) for t, b, a in zip(template, before, after, strict=True)]
    return copy.deepcopy(after)


def _marked_like(document: dict[str, Any], template: Any) -> dict[str, Any]:
    """A new group's entry: its document, marked as consolidated (with nothing below it) the
    way zarr-python marks the groups it lists, when the template group is so marked."""
    entry = copy.deepcopy(document)
    marker = _member(template, "consolidated_metadata")
    if isinstance(marker, dict):
        entry["consolidated_metadata"] = {**copy.deepcopy(marker), "metadata": {}}
    return entry


def _key(node: str, name: str) -> str:
    return f"{node}/{name}" if node else name


def _consolidated_order(key: str) -> tuple[int, str]:
    return key.count("/"), unicodedata.normalize("NFKC", key).casefold()


def _v3_codecs(codecs: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(codecs, list) or not all(isinstance(c, dict) for c in codecs):
        raise PyramidError(f"{where}: codecs must be a list of objects. Fix the metadata.")
    return codecs


# Codecs that decode chunks into Python objects; pickle runs arbitrary code while doing so.
_OBJECT_CODECS = {"pickle", "msgpack2", "json2", "vlen-utf8", "vlen-bytes", "vlen-array"}


def _check_codec(codec: Any, key: str, where: str) -> None:
    name = _member(codec, key)
    if not isinstance(name, str):
        raise PyramidError(
            f"{where}: a codec without a string {key!r}: {codec!r:.80}. Fix the metadata."
        )
    if name.removeprefix("numcodecs.") in _OBJECT_CODECS | {"categorize"}:
        raise PyramidError(
            f"{where}: codec {name!r} is not supported: it decodes to Python objects (pickle "
            "even runs code), and pyramids are built for numeric images only. Convert the "
            "image to a numeric dtype with a numeric codec (e.g. blosc or zstd)."
        )


def _v2_dtype(value: Any, where: str) -> np.dtype:
    if not isinstance(value, str):
        raise PyramidError(
            f"{where}: dtype must be a string such as '<u2', got {value!r:.80}; pyramids can be "
            "built for bool, integer and float images. Fix the metadata or convert the image."
        )
    try:
        dtype = np.dtype(value)
    except (TypeError, ValueError):
        raise PyramidError(
            f"{where}: dtype {value!r:.80} is not supported; pyramids can be built for bool, "
            "integer and float images; convert the image to one of those first."
        ) from None
    return _check_numeric(dtype, where)


def _v3_dtype(value: Any, where: str) -> np.dtype:
    if not isinstance(value, str) or value not in _V3_DTYPES:
        raise PyramidError(
            f"{where}: data_type {value!r:.80} is not supported; pyramids can be built for "
            "bool, integer and float images; convert the image to one of those first."
        )
    return np.dtype(value)


def _check_numeric(dtype: np.dtype, where: str) -> np.dtype:
    if dtype.kind not in "biuf" or dtype.fields is not None or dtype.subdtype is not None:
        raise PyramidError(
            f"{where}: dtype {dtype} is not supported; pyramids can be built for bool, "
            "integer and float images; convert the image to one of those first."
        )
    return dtype


def _member(document: Any, key: str) -> Any:
    return document.get(key) if isinstance(document, dict) else None


def _int_list(value: Any, where: str, minimum: int) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in value
    ):
        raise PyramidError(
            f"{where} must be a list of integers >= {minimum}, got {value!r:.80}. "
            "Fix the metadata."
        )
    return tuple(value)
