"""The layer picker without Qt: which layers of a napari layer list a build can start from."""

from __future__ import annotations

import numpy as np
from napari.components import ViewerModel

from napari_pyramids._napari.layers import PATH_KEY
from napari_pyramids._napari.picker import LayerPicker, read_layers, root_or_none, source_layers
from napari_pyramids._napari.sample_data import write_sample_image
from napari_pyramids._napari.texts import NO_LAYER, SAVE_AS_OME_ZARR


def test_picker_lists_image_layers_top_first_and_names_the_others(tmp_path):
    root = write_sample_image(tmp_path / "s.ome.zarr", size=64, depth=2)
    viewer = ViewerModel()
    picker = LayerPicker(viewer.layers)
    assert picker.choices() == []
    assert picker.note == NO_LAYER

    nuclei, membranes = read_layers(root)
    viewer.add_layer(nuclei)
    viewer.add_layer(membranes)
    viewer.add_image(np.zeros((8, 8)), name="scratch")

    assert picker.choices() == [("membranes", membranes), ("nuclei", nuclei)]
    assert picker.note.split("\n") == [
        "Not listed, not from an OME-Zarr image on disk: 'scratch' (not read from a file)",
        SAVE_AS_OME_ZARR,
    ]
    assert nuclei.metadata[PATH_KEY] == str(root)
    assert root_or_none(nuclei) == root
    assert root_or_none(viewer.layers["scratch"]) is None
    assert source_layers(viewer.layers, root) == [nuclei, membranes]


def test_picker_says_when_the_layers_change(tmp_path):
    root = write_sample_image(tmp_path / "s.ome.zarr", size=64, depth=2)
    viewer = ViewerModel()
    picker = LayerPicker(viewer.layers)
    changes = []
    picker.changed.connect(lambda: changes.append(len(viewer.layers)))

    nuclei, membranes = read_layers(root)
    viewer.add_layer(nuclei)
    viewer.add_layer(membranes)
    nuclei.name = "DAPI"
    viewer.layers.remove(membranes)
    membranes.name = "not in the viewer any more"

    assert changes == [1, 2, 2, 1]
    assert picker.choices() == [("DAPI", nuclei)]


def test_picker_names_five_unlisted_layers_and_counts_the_rest():
    viewer = ViewerModel()
    picker = LayerPicker(viewer.layers)
    for i in range(7):
        viewer.add_image(np.zeros((4, 4)), name=f"plain {i}")

    assert picker.choices() == []
    listed, unlisted, hint = picker.note.split("\n")
    assert listed == NO_LAYER
    assert hint == SAVE_AS_OME_ZARR
    assert unlisted.count("(not read from a file)") == 5
    assert "'plain 6'" in unlisted
    assert "'plain 1'" not in unlisted
    assert unlisted.endswith("; and 2 more")
