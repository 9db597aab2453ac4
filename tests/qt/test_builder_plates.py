"""The Pyramid Builder on plates written by ome-zarr-py and ngff-zarr (NGFF 0.4 and 0.5):
a plate opened whole with napari-ome-zarr, and a field with its labels and its plate."""

from __future__ import annotations

import numpy as np
import pytest

from imaging import file_hashes, reference_pyramid
from napari_pyramids import open_image
from plates import (
    listed_levels,
    ngff_zarr_plate,
    ome_zarr_plate,
    read_level,
    validate_image,
    validate_plate,
)

pytestmark = pytest.mark.gui
BUILD_TIMEOUT = 120_000
LEVELS = 3  # 48 x 40 -> 24 x 20 -> 12 x 10

PLATES = [
    pytest.param(ome_zarr_plate, "0.4", id="ome-zarr-py-0.4"),
    pytest.param(ome_zarr_plate, "0.5", id="ome-zarr-py-0.5"),
    pytest.param(ngff_zarr_plate, "0.4", id="ngff-zarr-0.4"),
    pytest.param(ngff_zarr_plate, "0.5", id="ngff-zarr-0.5"),
]


def _images(data):
    """The fields of a plate's data (the label images apart)."""
    return {k: v for k, v in data.items() if "/labels/" not in k}


def _expected(name, data):
    if "/labels/" in name:
        return reference_pyramid(data, (2, 2), LEVELS, "mode")
    return reference_pyramid(data, (1, 2, 2), LEVELS, "mean")


def _assert_built(plate, data):
    """Every image and label image has the levels, equal to the numpy reference."""
    for name, level0 in data.items():
        assert len(listed_levels(plate / name)) == LEVELS, name
        for index, expected in enumerate(_expected(name, level0)):
            np.testing.assert_array_equal(read_level(plate / name, index), expected)


def _tree(image):
    """Every file (with its hash) and folder inside one image, its label images included."""
    return {
        **file_hashes(image),
        **{str(d.relative_to(image)): "dir" for d in image.rglob("*") if d.is_dir()},
    }


def _entry_text(widget, layer):
    combo = widget.image.native
    return combo.itemText(widget.image.choices.index(layer))


def _open_plate(viewer, writer, version, tmp_path, rng):
    plate = tmp_path / "plate.zarr"
    data = writer(plate, version, rng)
    layers = viewer.open(str(plate), plugin="napari-ome-zarr")
    return plate, data, layers


@pytest.mark.parametrize(("writer", "version"), PLATES)
def test_plate_opened_with_napari_ome_zarr_is_listed_with_its_images(
    viewer_and_builder, tmp_path, rng, writer, version
):
    viewer, widget = viewer_and_builder
    plate, data, layers = _open_plate(viewer, writer, version, tmp_path, rng)
    fields = len(_images(data))
    labels = len(data) - fields

    assert set(widget.image.choices) == set(layers)
    expected = f"[plate, {fields} images" + (f" + {labels} label image]" if labels else "]")
    for layer in layers:
        assert _entry_text(widget, layer) == f"{layer.name} {expected}"
    assert widget.image.value in layers
    assert str(plate) in widget.info.value
    assert f"{fields} images" in widget.info.value
    assert widget.with_labels.native.isVisibleTo(widget.native) == bool(labels)
    assert not widget.whole_plate.native.isVisibleTo(widget.native)


@pytest.mark.parametrize(("writer", "version"), PLATES)
def test_building_a_plate_builds_every_field_and_its_labels(
    qtbot, viewer_and_builder, tmp_path, rng, writer, version
):
    viewer, widget = viewer_and_builder
    plate, data, layers = _open_plate(viewer, writer, version, tmp_path, rng)
    names = [layer.name for layer in layers]
    widget.num_levels.value = LEVELS
    steps = []
    widget._datasets.progressed.connect(lambda done, total, _: steps.append((done, total)))

    with qtbot.waitSignal(widget.events.build_finished, timeout=BUILD_TIMEOUT) as outcome:
        widget.build.clicked()

    assert outcome.args == ["built"]
    _assert_built(plate, data)
    for name in data:
        if "/labels/" not in name:
            validate_image(plate / name)  # with its labels: as many levels (ome-zarr-models)
    validate_plate(plate)
    assert steps
    assert steps[-1] == (len(data), len(data))
    # napari-ome-zarr read the plate again: its layers show the new levels.
    assert [layer.name for layer in viewer.layers] == names
    first = sorted(_images(data))[0]
    expected = _expected(first, data[first])
    for layer in viewer.layers:
        assert layer.source.reader_plugin == "napari-ome-zarr"
        assert layer.multiscale
        assert len(layer.data) == LEVELS
        if type(layer).__name__ == "Image":
            channel = names.index(layer.name)
            top_left = np.asarray(layer.data[2])[:12, :10]  # the first well's first field
            np.testing.assert_array_equal(top_left, expected[2][channel])
    assert widget.image.value in list(viewer.layers)
    assert widget.status.value == f"Built: {len(data)} images: {len(data)} built."


@pytest.mark.parametrize(("writer", "version"), [PLATES[0], PLATES[3]])
def test_cancel_mid_plate_leaves_every_image_readable_and_build_finishes_it(
    qtbot, viewer_and_builder, tmp_path, rng, writer, version, gated_executor
):
    viewer, widget = viewer_and_builder
    plate, data, _ = _open_plate(viewer, writer, version, tmp_path, rng)
    before = {name: _tree(plate / name) for name in _images(data)}
    widget.num_levels.value = LEVELS
    widget.workers = 2
    widget.executor = gated_executor

    widget.build.clicked()
    assert gated_executor.held.wait(timeout=30)  # one block written, the others held
    widget.cancel.clicked()
    with qtbot.waitSignal(widget.events.build_finished, timeout=BUILD_TIMEOUT) as outcome:
        gated_executor.gate.set()

    assert outcome.args == ["cancelled"]
    assert widget.status.value.startswith("Cancelled")
    complete = 0
    for name, level0 in data.items():
        image = open_image(plate / name)
        count = len(image.level_paths)
        assert count in (1, LEVELS), name
        complete += count == LEVELS
        for index, expected in enumerate(_expected(name, level0)[:count]):
            np.testing.assert_array_equal(read_level(plate / name, index), expected)
        if count == 1 and name in before:
            assert _tree(plate / name) == before[name]
    assert complete < len(data)

    widget.executor = None
    with qtbot.waitSignal(widget.events.build_finished, timeout=BUILD_TIMEOUT) as outcome:
        widget.build.clicked()
    assert outcome.args == ["built"]
    _assert_built(plate, data)


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_a_field_offers_its_labels_and_its_plate(
    qtbot, viewer_and_builder, tmp_path, rng, version
):
    viewer, widget = viewer_and_builder
    plate = tmp_path / "plate.zarr"
    data = ome_zarr_plate(plate, version, rng)
    field = plate / "A/1/0"
    layers = viewer.open(str(field), plugin="napari-pyramids")
    widget.image.value = layers[0]
    others = {n: _tree(plate / n) for n in _images(data) if n != "A/1/0"}

    assert widget.with_labels.native.isVisibleTo(widget.native)
    assert widget.with_labels.value  # labels on by default
    assert widget.whole_plate.native.isVisibleTo(widget.native)
    assert not widget.whole_plate.value
    widget.num_levels.value = LEVELS
    # The disk a build needs counts every image it covers, not only the one picked.
    in_field = [name for name in data if name.startswith("A/1/0")]
    assert f"for the {len(in_field)} images if alike" in widget.summary.value
    widget.whole_plate.value = True
    assert f"for the {len(data)} images if alike" in widget.summary.value
    widget.whole_plate.value = False
    with qtbot.waitSignal(widget.events.build_finished, timeout=BUILD_TIMEOUT) as outcome:
        widget.build.clicked()

    assert outcome.args == ["built"]
    _assert_built(plate, {k: v for k, v in data.items() if k.startswith("A/1/0")})
    validate_image(field)  # the labels are in step (ome-zarr-models)
    assert {n: _tree(plate / n) for n in others} == others
    assert all(layer.multiscale and len(layer.data) == LEVELS for layer in viewer.layers)

    widget.whole_plate.value = True
    with qtbot.waitSignal(widget.events.build_finished, timeout=BUILD_TIMEOUT) as outcome:
        widget.build.clicked()

    assert outcome.args == ["built"]
    _assert_built(plate, data)
    validate_plate(plate)
    assert "already complete" in widget.status.value  # A/1/0 and its labels were skipped
    assert widget.summary.value.endswith("(A/1/0 is).")  # no escaped line break shown


def test_an_image_without_labels_or_plate_offers_neither(viewer_and_builder, sample_path):
    viewer, widget = viewer_and_builder
    viewer.open(str(sample_path), plugin="napari-pyramids")

    assert not widget.with_labels.native.isVisibleTo(widget.native)
    assert not widget.whole_plate.native.isVisibleTo(widget.native)
