"""Plates, wells, collections and labels written by other tools (ome-zarr-py, ngff-zarr) and by
hand as the bioformats2raw layout describes, NGFF 0.4 (zarr v2) and 0.5 (zarr v3).

Nothing here imports napari_pyramids. Each writer returns the level-0 data of every image it
wrote, keyed by the image's path relative to the dataset, so tests compare with numpy.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import zarr

from imaging import reference_pyramid

FIELD_SHAPE = (2, 48, 40)
LABEL_SHAPE = (48, 40)


def _field(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 4000, size=FIELD_SHAPE, dtype=np.uint16)


def _label(rng: np.random.Generator) -> np.ndarray:
    # Few ids in blobs, so mode has real windows to decide (and ties to break).
    coarse = rng.integers(0, 5, size=(LABEL_SHAPE[0] // 4, LABEL_SHAPE[1] // 4), dtype=np.uint32)
    labels = np.kron(coarse, np.ones((4, 4), dtype=np.uint32))
    noise = rng.random(LABEL_SHAPE) < 0.2
    labels[noise] = rng.integers(0, 5, size=int(noise.sum()), dtype=np.uint32)
    return labels


def ome_zarr_format(version: str):
    from ome_zarr.format import FormatV04, FormatV05

    return FormatV04() if version == "0.4" else FormatV05()


def ome_zarr_image(group: zarr.Group, data: np.ndarray, version: str, axes: str = "cyx") -> None:
    """Level 0 only, written by ome-zarr-py's ``write_image``."""
    from ome_zarr.writer import write_image

    write_image(data, group, scale_factors=(), axes=list(axes), fmt=ome_zarr_format(version))


def ome_zarr_label(image: zarr.Group, name: str, data: np.ndarray, version: str) -> None:
    """A label image with level 0 only, by ome-zarr-py's ``write_multiscale_labels``."""
    from ome_zarr.writer import write_multiscale_labels

    write_multiscale_labels([data], image, name, fmt=ome_zarr_format(version), axes=["y", "x"])
    if version == "0.5":
        # ome-zarr-py 0.18 leaves 'version' out of a 0.5 labels group and dimension_names out
        # of the label array, both of which ome-zarr-models requires: put them in, as a
        # careful writer would, so that the validation after a build tests the build.
        labels = image["labels"]
        labels.attrs["ome"] = {"version": "0.5", **labels.attrs["ome"]}
        array_json = Path(labels.store.root) / labels.path / name / "s0" / "zarr.json"
        document = json.loads(array_json.read_text())
        document["dimension_names"] = ["y", "x"]
        array_json.write_text(json.dumps(document))


def ome_zarr_plate(
    path: Path,
    version: str,
    rng: np.random.Generator,
    wells: tuple[str, ...] = ("A/1", "B/2"),
    fields: int = 2,
    label_fields: tuple[str, ...] = ("A/1/0",),
) -> dict[str, np.ndarray]:
    """A plate by ome-zarr-py: ``write_plate_metadata``, ``write_well_metadata``,
    ``write_image`` and labels ``cells`` on ``label_fields``."""
    from ome_zarr.writer import write_plate_metadata, write_well_metadata

    fmt = ome_zarr_format(version)
    root = zarr.open_group(path, mode="w", zarr_format=2 if version == "0.4" else 3)
    rows = sorted({w.split("/")[0] for w in wells})
    columns = sorted({w.split("/")[1] for w in wells})
    write_plate_metadata(root, rows, columns, list(wells), fmt=fmt)
    data = {}
    for well_path in wells:
        row, column = well_path.split("/")
        well = root.require_group(row).require_group(column)
        write_well_metadata(well, [{"path": str(f)} for f in range(fields)], fmt=fmt)
        for f in range(fields):
            name = f"{well_path}/{f}"
            data[name] = _field(rng)
            ome_zarr_image(well.require_group(str(f)), data[name], version)
            if name in label_fields:
                data[f"{name}/labels/cells"] = _label(rng)
                ome_zarr_label(well[str(f)], "cells", data[f"{name}/labels/cells"], version)
    return data


def ngff_zarr_plate(
    path: Path, version: str, rng: np.random.Generator, fields: int = 2
) -> dict[str, np.ndarray]:
    """A 1 x 2 plate by ngff-zarr's ``to_hcs_zarr`` and ``write_hcs_well_image`` (which
    consolidates each image's metadata, and nests levels as ``scale0/image``)."""
    import ngff_zarr as nz
    from ngff_zarr.v04.zarr_metadata import Plate, PlateColumn, PlateRow, PlateWell

    columns = [PlateColumn(name="1"), PlateColumn(name="2")]
    wells = [
        PlateWell(path="A/1", rowIndex=0, columnIndex=0),
        PlateWell(path="A/2", rowIndex=0, columnIndex=1),
    ]
    plate = Plate(
        columns=columns, rows=[PlateRow(name="A")], wells=wells, name="plate",
        field_count=fields, version=version,
    )  # fmt: skip
    nz.to_hcs_zarr(nz.HCSPlate(None, plate), str(path))
    data = {}
    for column in ("1", "2"):
        for f in range(fields):
            name = f"A/{column}/{f}"
            data[name] = _field(rng)
            image = nz.to_ngff_image(data[name], dims=["c", "y", "x"])
            multiscales = nz.to_multiscales(image, scale_factors=[])
            nz.write_hcs_well_image(
                str(path), multiscales, plate, "A", column, field_index=f, version=version
            )
    return data


def bioformats2raw_collection(
    path: Path, version: str, rng: np.random.Generator, series: int = 3, listed: bool = True
) -> dict[str, np.ndarray]:
    """The bioformats2raw layout: ``bioformats2raw.layout: 3`` at the root, images ``0``,
    ``1``... written by ome-zarr-py, and (when ``listed``) an ``OME`` group naming them."""
    zarr_format = 2 if version == "0.4" else 3
    root = zarr.open_group(path, mode="w", zarr_format=zarr_format)
    layout = {"bioformats2raw.layout": 3}
    root.attrs.update(layout if version == "0.4" else {"ome": {"version": "0.5", **layout}})
    data = {}
    for k in range(series):
        data[str(k)] = _field(rng)
        ome_zarr_image(root.require_group(str(k)), data[str(k)], version)
    if listed:
        ome = root.require_group("OME")
        names = {"series": [str(k) for k in range(series)]}
        ome.attrs.update(names if version == "0.4" else {"ome": {"version": "0.5", **names}})
        (path / "OME" / "METADATA.ome.xml").write_text("<OME/>\n")
    return data


def ngff_attrs(path: Path) -> dict:
    """The NGFF keys of a group (0.4: ``.zattrs``; 0.5: ``zarr.json`` attributes.ome)."""
    if (path / "zarr.json").exists():
        return json.loads((path / "zarr.json").read_text())["attributes"].get("ome", {})
    return json.loads((path / ".zattrs").read_text())


def listed_levels(path: Path) -> list[str]:
    return [d["path"] for d in ngff_attrs(path)["multiscales"][0]["datasets"]]


def read_level(image: Path, index: int) -> np.ndarray:
    """Level ``index`` of an image, opened by zarr-python as the array its metadata lists."""
    return zarr.open_array(image / listed_levels(image)[index], mode="r")[...]


def assert_built(root: Path, data: dict[str, np.ndarray], levels: int) -> None:
    """Every image of ``data`` lists ``levels`` levels equal to numpy's (mean; mode for
    labels), and holds nothing of a build (no build folder, no leftover)."""
    for name, level0 in data.items():
        is_label = "/labels/" in name
        factors = (2, 2) if is_label else (1, 2, 2)
        expected = reference_pyramid(level0, factors, levels, "mode" if is_label else "mean")
        assert len(listed_levels(root / name)) == levels, name
        for k in range(1, levels):
            np.testing.assert_array_equal(read_level(root / name, k), expected[k], err_msg=name)
        assert not [n for n in os.listdir(root / name) if n.startswith(".napari-pyramids")]


def validate_image(image: Path) -> None:
    """ome-zarr-models reads the image with its labels (their levels must match)."""
    group = zarr.open_group(image, mode="r", use_consolidated=False)
    if (image / "zarr.json").exists():
        from ome_zarr_models.v05.image import Image
    else:
        from ome_zarr_models.v04.image import Image
    model = Image.from_zarr(group)
    if (image / "labels").exists():
        assert model.labels is not None


def validate_plate(plate: Path) -> None:
    group = zarr.open_group(plate, mode="r", use_consolidated=False)
    if (plate / "zarr.json").exists():
        from ome_zarr_models.v05.hcs import HCS
    else:
        from ome_zarr_models.v04.hcs import HCS
    HCS.from_zarr(group)
