"""The preview without Qt: lazy layers of the planned pyramid over the layers they hide."""

from __future__ import annotations

import numpy as np
import pytest
from napari.components import ViewerModel

from imaging import reference_pyramid, tree_snapshot
from napari_pyramids import open_image, plan_pyramid
from napari_pyramids._napari.picker import read_layers, root_or_none
from napari_pyramids._napari.preview import PreviewLayers
from napari_pyramids._napari.sample_data import sample_planes, write_sample_image
from napari_pyramids.errors import PyramidError
from napari_pyramids.options import BuildOptions


@pytest.fixture
def viewer_with_sample(tmp_path):
    root = write_sample_image(tmp_path / "s.ome.zarr", size=64, depth=2)
    viewer = ViewerModel()
    sources = read_layers(root)
    for layer in sources:
        viewer.add_layer(layer)
    return viewer, root, sources


def test_preview_shows_the_planned_levels_over_hidden_sources(viewer_with_sample):
    viewer, root, (nuclei, membranes) = viewer_with_sample
    membranes.visible = False
    nuclei.contrast_limits = (10, 900)
    before = tree_snapshot(root)
    preview = PreviewLayers(viewer.layers)
    updates = []
    preview.updated.connect(lambda: updates.append(len(preview.layers)))

    levels = preview.show(open_image(root), BuildOptions(num_levels=3))

    plan = plan_pyramid(open_image(root), num_levels=3)
    assert [level.shape for level in levels] == [level.shape for level in plan.levels]
    assert [layer.name for layer in viewer.layers] == [
        "nuclei", "membranes", "nuclei (preview)", "membranes (preview)",
    ]  # fmt: skip
    shown_nuclei, shown_membranes = preview.layers
    expected = reference_pyramid(sample_planes(64, 2), (1, 1, 2, 2), 3, "mean")
    for channel, layer in enumerate(preview.layers):
        # Computed exactly in this thread (napari's reads never wait; see test_preview_tiles).
        assert [_values(level).tolist() for level in layer.data] == [
            level[channel].tolist() for level in expected
        ]
        assert root_or_none(layer) is None  # a preview is never picked
    assert tuple(shown_nuclei.contrast_limits) == (10, 900)
    assert shown_nuclei.visible
    assert not shown_membranes.visible  # the source's own visibility
    assert not nuclei.visible
    assert not membranes.visible
    assert updates == [2]
    assert tree_snapshot(root) == before

    preview.show(open_image(root), BuildOptions(num_levels=2))  # replaces it
    assert [len(layer.data) for layer in preview.layers] == [2, 2]
    assert len(viewer.layers) == 4
    assert not preview.layers[1].visible

    preview.remove()
    assert preview.layers == ()
    assert list(viewer.layers) == [nuclei, membranes]
    assert nuclei.visible
    assert not membranes.visible
    assert tree_snapshot(root) == before


def _values(level):
    return level.computed() if hasattr(level, "computed") else np.asarray(level)


def test_deleting_a_preview_layer_gives_its_own_source_back(viewer_with_sample):
    viewer, root, (nuclei, membranes) = viewer_with_sample
    preview = PreviewLayers(viewer.layers)
    preview.show(open_image(root), BuildOptions(num_levels=2))
    updates = []
    preview.updated.connect(lambda: updates.append(len(preview.layers)))

    viewer.layers.remove(preview.layers[0])
    assert nuclei.visible  # its own source, and only it
    assert not membranes.visible
    assert [layer.name for layer in preview.layers] == ["membranes (preview)"]
    viewer.layers.remove(preview.layers[0])

    assert updates == [1, 0]
    assert nuclei.visible
    assert membranes.visible


def test_the_look_set_on_a_preview_carries_over(viewer_with_sample):
    viewer, root, (nuclei, membranes) = viewer_with_sample
    preview = PreviewLayers(viewer.layers)
    preview.show(open_image(root), BuildOptions(num_levels=2))
    shown = preview.layers[0]
    shown.contrast_limits = (20, 300)
    shown.colormap = "yellow"
    shown.gamma = 0.5
    shown.opacity = 0.4

    preview.show(open_image(root), BuildOptions(num_levels=3, method="max"))  # next preview
    again = preview.layers[0]
    assert len(again.data) == 3
    assert tuple(again.contrast_limits) == (20, 300)
    assert again.colormap.name == "yellow"
    assert again.gamma == pytest.approx(0.5)
    assert again.opacity == pytest.approx(0.4)

    preview.remove(keep_look=True)  # as after a build: the source shows as its preview did
    assert tuple(nuclei.contrast_limits) == (20, 300)
    assert nuclei.colormap.name == "yellow"
    assert nuclei.opacity == pytest.approx(0.4)
    assert nuclei.visible
    assert membranes.visible


def test_an_impossible_preview_changes_nothing(viewer_with_sample):
    viewer, root, sources = viewer_with_sample
    preview = PreviewLayers(viewer.layers)

    with pytest.raises(PyramidError, match="smaller than one pixel"):
        preview.show(open_image(root), BuildOptions(num_levels=12))

    assert list(viewer.layers) == sources
    assert all(layer.visible for layer in sources)
