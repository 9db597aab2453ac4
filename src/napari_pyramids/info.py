"""A human-readable description of an image's levels, or of a dataset's images
(``napari-pyramids info``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .datasets import Dataset, DatasetImage, find_images, label_names, labels_out_of_step
from .errors import PyramidError
from .images import open_image
from .ome.image import OmeZarrImage, read_array_info
from .storage import Store
from .untrusted import URL_SCHEME


def _numbers(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


def describe_path(
    zarrurl: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None
) -> str:
    """An image's levels (:func:`describe_image`), or, for a plate, a well, a collection or
    a folder, what it is and each of its images with its levels and labels.

    A URL is described as one image: datasets are found on local paths only.
    """
    if isinstance(zarrurl, str) and URL_SCHEME.match(zarrurl):
        return describe_image(zarrurl, storage_options)
    dataset = find_images(zarrurl)
    if dataset.is_one_image:
        return describe_image(zarrurl)
    return describe_dataset(dataset)


def describe_dataset(dataset: Dataset) -> str:
    """What the dataset is, then one line per image (and label image), then every label
    image out of step with its image."""
    lines = [dataset.describe()]
    mismatches = []
    for entry in dataset.images:
        line, image = _image_line(entry, entry.path)
        lines.append(line)
        for label in entry.labels:
            lines.append(_image_line(entry, entry.label_path(label), label)[0])
        if image is not None:
            mismatches.extend(labels_out_of_step(image))
    for mismatch in mismatches:
        lines.append(f"  out of step: {mismatch.message}")
    return "\n".join(lines)


def _image_line(
    entry: DatasetImage, path: os.PathLike[str] | Store, label: str | None = None
) -> tuple[str, OmeZarrImage | None]:
    name = entry.label_name(label) if label is not None else entry.name
    if entry.problem is not None and label is None:
        return f"  {name}: cannot be built: {entry.problem}", None
    try:
        image = open_image(path)
    except PyramidError as exc:
        return f"  {name}: cannot be built: {exc}", None
    kind = "labels" if image.is_label else "image"
    count = len(image.level_paths)
    return (
        f"  {name}: {kind}, {count} level{'s' * (count != 1)}, shape {image.level0.shape} "
        f"{image.level0.dtype}",
        image,
    )


def describe_image(
    zarrurl: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None
) -> str:
    """One line per level (path, shape, chunks and shards, scale, translation, codec), then
    one per interrupted build still waiting to be rolled back, then the label images."""
    image = open_image(zarrurl, storage_options)
    axes = ", ".join(a.name + (f" [{a.unit}]" if a.unit else "") for a in image.axes)
    kind = "labels" if image.is_label else "image"
    lines = [
        f"{image.root}: {kind}, zarr v{image.zarr_format} / NGFF {image.ngff_version}, "
        f"{image.level0.dtype}, axes ({axes})"
    ]
    if not image.has_multiscales:
        lines.append("  no multiscales metadata: a bare array '0' (axes guessed from ndim)")
    transforms = [t for t in image.multiscale.get("datasets", [])]
    for k, path in enumerate(image.level_paths):
        info = read_array_info(image.store, path, image.zarr_format)
        shards = f" shards {info.shards}" if info.shards else ""
        translation = ""
        for t in transforms[k].get("coordinateTransformations", []) if transforms else []:
            if t.get("type") == "translation":
                translation = f" translation {_numbers(tuple(t['translation']))}"
        lines.append(
            f"  level {k} {path!r}: shape {info.shape} chunks {info.chunks}{shards} "
            f"scale {_numbers(image.level_scales[k])}{translation} codec {info.codec_summary}"
        )
    for name in image.store.leftovers():
        # A build killed while replacing levels lists level 0 alone until it is rolled back.
        lines.append(
            f"  an interrupted build left {name!r}: the next build of this image rolls "
            "it back (run the same build again to finish it)"
        )
    lines.extend(_labels_lines(image))
    return "\n".join(lines)


def _labels_lines(image: OmeZarrImage) -> list[str]:
    """The label images of an image and their levels, and any out of step with it."""
    lines = []
    if not image.is_label:
        entry = DatasetImage(image.root, ".", label_names(image.store)[0])
        for label in entry.labels:
            # Through the image's store: a URL's label images need its storage options.
            try:
                where: os.PathLike[str] | Store = image.store.child(f"labels/{label}")
            except PyramidError:
                where = entry.label_path(label)  # _image_line names the problem
            lines.append(_image_line(entry, where, label)[0])
    for mismatch in labels_out_of_step(image):
        lines.append(f"  out of step: {mismatch.message}")
    return lines
