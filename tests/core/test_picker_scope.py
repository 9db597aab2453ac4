"""What a picked layer lets a build cover, without Qt: a plate opened whole by napari-ome-zarr,
a field with its labels and its plate, an image on its own."""

from __future__ import annotations

import numpy as np
import pytest
from napari.components import ViewerModel

from imaging import write_image
from napari_pyramids._napari.picker import LayerPicker, layer_source
from napari_pyramids._napari.scope import enclosing_plate, image_scope
from plates import bioformats2raw_collection, ngff_zarr_plate, ome_zarr_plate


def _open_with_napari_ome_zarr(viewer, path):
    """The layers napari-ome-zarr's reader makes, added as napari's File > Open adds them."""
    from napari_ome_zarr import napari_get_reader

    layers = []
    with layer_source(path=str(path), reader_plugin="napari-ome-zarr"):
        for entry in napari_get_reader(str(path))():
            layers += viewer._add_layer_from_data(*entry)
    return layers


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_a_plate_opened_by_napari_ome_zarr_is_listed_and_covers_every_field(
    tmp_path, rng, version
):
    plate = tmp_path / "plate.zarr"
    data = ome_zarr_plate(plate, version, rng, wells=("A/1", "A/2", "B/1"), fields=3)
    viewer = ViewerModel()
    picker = LayerPicker(viewer.layers)
    layers = _open_with_napari_ome_zarr(viewer, plate)

    listed = dict((layer, name) for name, layer in picker.choices())
    assert set(listed) == set(layers)
    fields = sum("/labels/" not in k for k in data)
    assert all(
        name.endswith(f"[plate, {fields} images + 1 label image]") for name in listed.values()
    )
    scope = picker.scope(layers[0])
    assert scope.dataset is not None
    assert scope.dataset.root == plate
    assert scope.image == plate / "A/1/0"
    assert scope.label_count == 1
    assert scope.build_path(with_labels=False, whole_plate=False) == plate


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_a_field_and_its_label_image_belong_to_their_plate(tmp_path, rng, version):
    plate = tmp_path / "plate.zarr"
    ome_zarr_plate(plate, version, rng)
    field = plate / "A/1/0"

    scope = image_scope(field)
    assert scope.plate == plate
    assert scope.label_count == 1
    assert scope.build_path(with_labels=True, whole_plate=False) == field
    assert scope.build_path(with_labels=False, whole_plate=False) is None
    assert scope.build_path(with_labels=False, whole_plate=True) == plate
    assert enclosing_plate(field / "labels" / "cells") == plate
    assert image_scope(plate / "B/2/1").label_count == 0


def test_plates_of_other_writers_and_collections_are_found(tmp_path, rng):
    plate = tmp_path / "nz.zarr"
    ngff_zarr_plate(plate, "0.5", rng)
    collection = tmp_path / "b2r.zarr"
    bioformats2raw_collection(collection, "0.4", rng)

    assert enclosing_plate(plate / "A/2/1") == plate
    assert enclosing_plate(collection / "2") == collection


def test_an_image_on_its_own_belongs_to_no_plate(tmp_path, rng):
    image = write_image(tmp_path / "one.zarr", rng.integers(0, 9, (2, 16, 16), dtype=np.uint8))
    # A folder named like a plate's row and column above it is no plate.
    nested = write_image(tmp_path / "A" / "1" / "0", rng.random((8, 8)).astype(np.float32))

    assert image_scope(image).plate is None
    assert image_scope(image).label_count == 0
    assert image_scope(image).build_path(with_labels=True, whole_plate=True) is None
    assert enclosing_plate(nested) is None
