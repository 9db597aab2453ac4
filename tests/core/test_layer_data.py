"""core.layers: OME-Zarr images as plain napari layer tuples, checked against what was written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr
from ome_zarr.format import FormatV04, FormatV05
from ome_zarr.writer import write_image as ome_write_image
from ome_zarr.writer import write_labels as ome_write_labels

from imaging import write_image
from napari_pyramids._napari.layers import CHANNEL_KEY, PATH_KEY, image_path_of, layer_data
from napari_pyramids._napari.sample_data import sample_planes, write_sample_image
from napari_pyramids.errors import PyramidError


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_channels_become_layers_named_and_coloured_from_omero(tmp_path, zarr_format):
    root = write_sample_image(tmp_path / "s.ome.zarr", zarr_format=zarr_format, size=64, depth=2)
    expected = sample_planes(64, 2)

    layers = layer_data(root)

    assert [kind for _, _, kind in layers] == ["image", "image"]
    assert [kw["name"] for _, kw, _ in layers] == ["nuclei", "membranes"]
    assert [kw["colormap"] for _, kw, _ in layers] == ["#00ffff", "#ff00ff"]
    for channel, (data, kwargs, _) in enumerate(layers):
        assert kwargs["multiscale"] is False
        assert kwargs["scale"] == [2.0, 0.5, 0.5]
        assert kwargs["translate"] == [0.0, 0.0, 0.0]
        assert kwargs["axis_labels"] == ["z", "y", "x"]
        assert kwargs["units"] == ["micrometer"] * 3
        assert kwargs["contrast_limits"] == [0.0, 2000.0]
        assert kwargs["visible"] is True
        assert kwargs["metadata"] == {PATH_KEY: str(root), CHANNEL_KEY: channel}
        np.testing.assert_array_equal(np.asarray(data), expected[channel])
    assert layers[0][1]["blending"] == "translucent_no_depth"
    assert layers[1][1]["blending"] == "additive"


@pytest.mark.parametrize("fmt", [FormatV04(), FormatV05()], ids=["ngff0.4", "ngff0.5"])
def test_pyramid_and_labels_written_by_ome_zarr_py(tmp_path, rng, fmt):
    data = rng.integers(0, 4000, size=(2, 128, 96), dtype=np.uint16)
    labels = np.zeros((128, 96), dtype=np.uint32)
    labels[10:60, 20:50] = 7
    labels[70:120, 5:90] = 3
    path = tmp_path / "third.ome.zarr"
    group = zarr.open_group(path, mode="w", zarr_format=fmt.zarr_format)
    ome_write_image(
        data, group, axes="cyx", fmt=fmt, scale_factors=(2, 4), scale={"y": 0.3, "x": 0.3}
    )
    ome_write_labels(
        labels, group, name="cells", axes="yx", fmt=fmt, scale_factors=(2,),
        scale={"y": 0.3, "x": 0.3},
    )  # fmt: skip

    layers = layer_data(path)

    assert [kind for _, _, kind in layers] == ["image", "image", "labels"]
    for channel, (levels, kwargs, _) in enumerate(layers[:2]):
        assert kwargs["multiscale"] is True
        assert [lv.shape for lv in levels] == [(128, 96), (64, 48), (32, 24)]
        np.testing.assert_array_equal(np.asarray(levels[0]), data[channel])
        np.testing.assert_allclose(kwargs["scale"], [0.3, 0.3])
        assert kwargs["metadata"][PATH_KEY] == str(path)
    levels, kwargs, _ = layers[2]
    assert kwargs["name"] == "cells"
    written = zarr.open_group(path / "labels" / "cells", mode="r")
    attrs = written.attrs.asdict()
    datasets = attrs.get("ome", attrs)["multiscales"][0]["datasets"]
    assert [lv.shape for lv in levels] == [written[d["path"]].shape for d in datasets]
    assert len(levels) > 1
    np.testing.assert_array_equal(np.asarray(levels[0]), labels)
    assert kwargs["metadata"][PATH_KEY] == str(path / "labels" / "cells")


def test_translation_and_label_image_opened_directly(tmp_path, rng):
    data = rng.integers(0, 9, size=(3, 40, 50), dtype=np.uint16)
    root = write_image(
        tmp_path / "seg.zarr", data, axes="zyx", scale=[2.0, 0.5, 0.25],
        translation=[10.0, -4.0, 3.5], labels=True,
    )  # fmt: skip

    [(levels, kwargs, kind)] = layer_data(root)

    assert kind == "labels"
    assert kwargs["name"] == "seg.zarr"
    assert kwargs["scale"] == [2.0, 0.5, 0.25]
    assert kwargs["translate"] == [10.0, -4.0, 3.5]
    np.testing.assert_array_equal(np.asarray(levels), data)


def test_malformed_display_hints_are_ignored_not_fatal(tmp_path, rng):
    data = rng.integers(0, 100, size=(3, 32, 32), dtype=np.uint8)
    omero = {
        "channels": [
            {"label": 5, "color": "red", "window": {"start": "0", "end": 10}, "active": "yes"},
            "not an object",
            {"label": "  ok  ", "color": "00ff00", "window": {"start": 9, "end": 1}},
        ]
    }
    root = write_image(tmp_path / "odd.zarr", data, axes="cyx", extra_attrs={"omero": omero})

    layers = layer_data(root)

    first, second, third = (kwargs for _, kwargs, _ in layers)
    assert first["name"] == "odd.zarr c0"
    assert "contrast_limits" not in first
    assert "visible" not in first
    assert first["colormap"] == "cyan"  # the default cycle, not the malformed colour
    assert second["name"] == "odd.zarr c1"
    assert third["name"] == "ok"
    assert third["colormap"] == "#00ff00"
    assert "contrast_limits" not in third


def test_a_level_listed_but_missing_is_refused_by_name(tmp_path, rng):
    root = write_image(tmp_path / "img.zarr", rng.random((32, 32)).astype(np.float32))
    attrs = json.loads((root / ".zattrs").read_text())
    attrs["multiscales"][0]["datasets"].append(
        {"path": "1", "coordinateTransformations": [{"type": "scale", "scale": [2.0, 2.0]}]}
    )
    (root / ".zattrs").write_text(json.dumps(attrs))

    with pytest.raises(PyramidError, match="level '1'"):
        layer_data(root)


def test_label_names_that_escape_the_labels_folder_are_skipped(tmp_path, rng):
    root = write_image(tmp_path / "img.zarr", rng.random((16, 16)).astype(np.float32))
    labels = root / "labels"
    labels.mkdir()
    (labels / ".zgroup").write_text('{"zarr_format": 2}')
    (labels / ".zattrs").write_text(json.dumps({"labels": ["../img.zarr"]}))

    with pytest.warns(UserWarning, match=r"\.\./img\.zarr"):
        layers = layer_data(root)

    assert [kind for _, _, kind in layers] == ["image"]


def test_image_path_of_layers_from_any_reader(tmp_path, rng):
    root = write_image(tmp_path / "img.zarr", rng.random((16, 16)).astype(np.float32))
    label = write_image(root / "labels" / "cells", np.ones((16, 16), np.uint16), labels=True)
    (root / "labels" / ".zattrs").write_text(json.dumps({"labels": ["cells"]}))
    (root / "labels" / ".zgroup").write_text('{"zarr_format": 2}')

    assert image_path_of({PATH_KEY: str(label)}, None, True) == label
    assert image_path_of({}, str(root), False) == root
    # napari-ome-zarr names a label layer "labels/labels/cells" with the image as source.
    assert image_path_of({}, str(root), True, "labels/labels/cells") == label
    with pytest.raises(PyramidError, match="not read from a file"):
        image_path_of({}, None, False)
    with pytest.raises(PyramidError, match="not a zarr group"):
        image_path_of({}, str(tmp_path), False)


def test_names_from_metadata_are_kept_literally_and_cut_at_200_characters(tmp_path):
    root = write_image(tmp_path / "img.zarr", np.zeros((2, 8, 8), np.uint8), axes="cyx")
    attrs = json.loads((root / ".zattrs").read_text())
    attrs["omero"] = {"channels": [{"label": " <b>a  b</b>\n"}, {"label": "C" * 1000}]}
    (root / ".zattrs").write_text(json.dumps(attrs))
    label = write_image(tmp_path / "label.zarr", np.zeros((8, 8), np.uint8), labels=True)
    attrs = json.loads((label / ".zattrs").read_text())
    attrs["multiscales"][0]["name"] = "&lt;" + "N" * 10**6
    (label / ".zattrs").write_text(json.dumps(attrs))

    names = [kwargs["name"] for _, kwargs, _ in layer_data(root) + layer_data(label)]

    assert names == ["<b>a  b</b>", "C" * 200, "&lt;" + "N" * 196]
