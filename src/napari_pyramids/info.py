"""A human-readable description of an image's levels (``napari-pyramids info``)."""

from __future__ import annotations

import os

from .images import open_image
from .ome.image import read_array_info


def _numbers(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


def describe_image(zarrurl: str | os.PathLike[str]) -> str:
    """One line per level (path, shape, chunks and shards, scale, translation, codec), then
    one per interrupted build still waiting to be rolled back."""
    image = open_image(zarrurl)
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
    return "\n".join(lines)
