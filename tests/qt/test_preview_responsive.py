"""The preview never makes napari wait; reloads and previews keep their layers and look."""

from __future__ import annotations

import gc
import re
import threading

import numpy as np
import pytest
import zarr
from napari.layers import Layer

from gates import GatedExecutor
from imaging import reference_pyramid
from napari_pyramids._napari.preview_tiles import TilePyramid
from napari_pyramids._napari.sample_data import sample_planes

pytestmark = pytest.mark.gui
BUILD_TIMEOUT = 60_000


def _show_preview(qtbot, viewer, widget, sample_path):
    """Open the sample and preview 3 levels of it; return its layers."""
    layers = viewer.open(str(sample_path), plugin="napari-pyramids")
    widget.num_levels.value = 3
    with qtbot.waitSignal(widget.events.preview_updated):
        widget.preview.clicked()
    return layers


@pytest.fixture
def closed_gate():
    executor = GatedExecutor(free=0)
    yield executor
    executor.gate.set()
    executor.shutdown(wait=True)


def test_preview_tiles_are_computed_off_the_ui_thread(
    qtbot, viewer_and_builder, sample_path, closed_gate
):
    viewer, widget = viewer_and_builder
    viewer.open(str(sample_path), plugin="napari-pyramids")
    widget.num_levels.value = 3
    widget.method.value = "median"
    widget.preview_executor = closed_gate

    # No tile can be computed: if napari waited for one, this would never return.
    with qtbot.waitSignal(widget.events.preview_updated):
        widget.preview.clicked()
    nuclei = widget.preview_layers[0]
    z = viewer.dims.current_step[0]
    assert closed_gate.held.wait(timeout=10)  # the tiles napari asked for wait in a thread
    assert not np.asarray(nuclei.data[2][z]).any()  # nothing computed yet

    with qtbot.waitSignal(widget.events.preview_redrawn, timeout=30_000):
        closed_gate.gate.set()
    assert widget._preview.pyramid.wait(timeout=30)
    expected = reference_pyramid(sample_planes(512, 4)[0], (1, 2, 2), 3, "median")
    np.testing.assert_array_equal(np.asarray(nuclei.data[2][z]), expected[2][z])
    np.testing.assert_array_equal(nuclei.data[1].computed(), expected[1])


def test_a_setting_change_refreshes_the_preview_layers_in_place(
    qtbot, viewer_and_builder, sample_path
):
    viewer, widget = viewer_and_builder
    _show_preview(qtbot, viewer, widget, sample_path)
    layers = widget.preview_layers
    layers[0].contrast_limits = (30, 900)
    layers[0].colormap = "red"
    layers[0].gamma = 0.7
    layers[0].opacity = 0.5

    with qtbot.waitSignal(widget.events.preview_updated, timeout=5000):
        widget.method.value = "max"  # the debounced refresh
    with qtbot.waitSignal(widget.events.preview_updated, timeout=5000):
        widget.num_levels.value = 2

    assert widget.preview_layers == layers  # the same layers, new data
    assert [len(layer.data) for layer in layers] == [2, 2]
    expected = reference_pyramid(sample_planes(512, 4)[0], (1, 2, 2), 2, "max")
    np.testing.assert_array_equal(layers[0].data[1].computed(), expected[1])
    assert tuple(layers[0].contrast_limits) == (30, 900)
    assert layers[0].colormap.name == "red"
    assert layers[0].gamma == pytest.approx(0.7)
    assert layers[0].opacity == pytest.approx(0.5)


def test_replaced_previews_are_freed_at_once_and_share_one_thread(
    qtbot, viewer_and_builder, sample_path
):
    """A setting change replaces the preview's pyramid. The replaced ones, and the tiles
    they hold, must go when napari drops them, not wait for Python's full garbage
    collection (rare, and 0.15 s of napari's thread when it comes); no thread is left per
    change."""
    viewer, widget = viewer_and_builder
    _show_preview(qtbot, viewer, widget, sample_path)
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()  # what only a collection would free stays, and is counted below
    try:
        for name, value in [
            ("method", "max"), ("method", "median"), ("edge", "keep"),
            ("method", "mode"), ("num_levels", 2), ("num_levels", 3), ("method", "mean"),
        ]:  # fmt: skip
            with qtbot.waitSignal(widget.events.preview_updated, timeout=5000):
                widget[name].value = value
            assert widget._preview.pyramid.wait(timeout=30)
            qtbot.wait(250)  # napari draws the new tiles
        alive = [o for o in gc.get_objects() if isinstance(o, TilePyramid)]
        assert alive == [widget._preview.pyramid]
    finally:
        if enabled:
            gc.enable()
    threads = [t for t in threading.enumerate() if t.name.startswith("pyramid-preview")]
    assert len(threads) == 1


def test_build_refreshes_the_layers_in_place_with_the_preview_look(
    qtbot, viewer_and_builder, sample_path
):
    viewer, widget = viewer_and_builder
    nuclei, membranes = _show_preview(qtbot, viewer, widget, sample_path)
    widget.preview_layers[1].contrast_limits = (100, 1200)
    widget.preview_layers[1].colormap = "yellow"

    with qtbot.waitSignal(widget.events.build_finished, timeout=BUILD_TIMEOUT) as outcome:
        widget.build.clicked()

    assert outcome.args[0] == "built"
    assert list(viewer.layers) == [nuclei, membranes]  # the same layer objects
    assert all(layer.multiscale and len(layer.data) == 3 for layer in viewer.layers)
    assert tuple(membranes.contrast_limits) == (100, 1200)
    assert membranes.colormap.name == "yellow"
    assert nuclei.visible
    assert membranes.visible
    expected = reference_pyramid(sample_planes(512, 4), (1, 1, 2, 2), 3, "mean")
    np.testing.assert_array_equal(np.asarray(membranes.data[2]), expected[2][1])
    assert widget.image.value in (nuclei, membranes)


def test_after_a_build_napari_draws_the_sources_only_from_the_built_levels(
    qtbot, viewer_and_builder, sample_path
):
    """Hidden under the preview, the sources are shown again only once they hold the built
    levels: their old level 0 is never drawn (read whole) on the way."""
    viewer, widget = viewer_and_builder
    layers = _show_preview(qtbot, viewer, widget, sample_path)
    drawn = []
    for layer in layers:
        layer.events.set_data.connect(
            lambda event, layer=layer: drawn.append((layer.name, layer.multiscale))
        )

    with qtbot.waitSignal(widget.events.build_finished, timeout=BUILD_TIMEOUT) as outcome:
        widget.build.clicked()

    assert outcome.args[0] == "built"
    assert {name for name, _ in drawn} == {"nuclei", "membranes"}  # both shown again
    assert all(multiscale for _, multiscale in drawn), drawn
    assert all(layer.visible and len(layer.data) == 3 for layer in layers)


def test_progress_counts_parts_of_blocks_in_the_widget(qtbot, viewer_and_builder, sample_path):
    viewer, widget = viewer_and_builder
    viewer.open(str(sample_path), plugin="napari-pyramids")
    widget.num_levels.value = 2
    widget.memory_budget = "64MiB"  # few blocks: progress must move inside them
    values = []
    widget.progress.changed.connect(values.append)

    shown, in_dock, said = [], [], []
    widget._runner.progressed.connect(lambda done, total, text: shown.append(done))
    widget._runner.progressed.connect(lambda done, total, text: said.append((done, total, text)))
    with qtbot.waitSignal(widget.events.build_finished, timeout=BUILD_TIMEOUT):
        widget.build.clicked()
        steps = []
        widget.worker.yielded.connect(steps.append)
        widget._runner._pbar.events.value.connect(lambda event: in_dock.append(event.value))

    writing = [s for s in steps if s.phase == "writing"]
    total = writing[-1].total
    progress_made = [s.done + s.part for s in writing]
    assert progress_made == sorted(progress_made)  # never backwards
    assert all(0 <= s.part < 1 for s in writing)
    assert widget.progress.max == total * 100  # in hundredths of a block
    assert widget.progress.value == widget.progress.max
    assert values == sorted(values), (values, said, steps)  # the bar never goes back
    assert len(set(shown)) >= 2
    assert in_dock == shown  # napari's activity dock shows every value the widget shows
    writing_said = [(d, t, text) for d, t, text in said if text.startswith("Writing")]
    assert writing_said
    for done, total, text in writing_said:
        # In percent of the whole build (as the bar shows it), not in blocks nobody sees.
        match = re.fullmatch(r"Writing the new levels: (\d+) % done", text)
        assert match, text
        assert abs(int(match[1]) - 100 * done / total) <= 1


def test_sample_builds_whole_when_build_is_clicked_at_once(qtbot, viewer_and_builder):
    viewer, widget = viewer_and_builder
    layers = viewer.open_sample("napari-pyramids", "sample", size=1024)
    root = layers[0].metadata["napari_pyramids_path"]
    widget.num_levels.value = 2

    # The sample's chunks may still be on their way to disk: the build waits for them.
    with qtbot.waitSignal(widget.events.build_finished, timeout=BUILD_TIMEOUT) as outcome:
        widget.build.clicked()

    assert outcome.args[0] == "built"
    expected = reference_pyramid(sample_planes(1024, 4), (1, 1, 2, 2), 2, "mean")
    np.testing.assert_array_equal(zarr.open_array(f"{root}/1", mode="r")[...], expected[1])
    np.testing.assert_array_equal(np.asarray(layers[0].data[1]), expected[1][0])


def test_tiles_computed_in_threads_leave_napari_dask_cache_working(sample_path):
    """napari computes its layers through a dask cache registered for every computation;
    tiles computed at the same time in other threads must not break those computations
    (dask's Cache is not thread-safe: a computation ending in one thread cleared the start
    times of napari's, which failed with a KeyError in CI; and dask's swap of its global
    callbacks during a computation could leave the cache unregistered)."""
    from concurrent.futures import ThreadPoolExecutor

    import dask.array as da
    from dask.cache import Cache
    from dask.callbacks import Callback

    from napari_pyramids import open_image
    from napari_pyramids._napari.preview import tile_pyramid
    from napari_pyramids.options import BuildOptions

    cache = Cache(2**26)
    cache.register()
    executor = ThreadPoolExecutor(4)
    try:
        pyramid = tile_pyramid(open_image(sample_path), BuildOptions(num_levels=4), executor)
        drawn = da.from_array(sample_planes(512, 4), chunks=(1, 1, 64, 64), name=False)
        for _ in range(3):
            pyramid.close()
            pyramid = tile_pyramid(open_image(sample_path), BuildOptions(num_levels=4), executor)
            for level in range(1, 4):  # ask for every tile, as napari does when it slices
                np.asarray(pyramid.levels[level])
            while not pyramid.wait(timeout=0.01):  # napari keeps computing meanwhile
                assert int((drawn + 1).sum().compute()) > 0
            assert pyramid.error is None
        expected = reference_pyramid(sample_planes(512, 4), (1, 1, 2, 2), 4, "mean")
        np.testing.assert_array_equal(np.asarray(pyramid.levels[3]), expected[3])
        assert cache._callback in Callback.active  # napari's cache still serves napari
    finally:
        Callback.active.discard(cache._callback)
        executor.shutdown(wait=True)


@pytest.mark.parametrize("in_memory", [False, True])
def test_sample_layers_show_each_plane_once_it_is_written(
    qtbot, make_napari_viewer, tmp_path, in_memory
):
    from napari_pyramids._napari._qt.sample_writer import write_in_background
    from napari_pyramids._napari.layers import layer_data
    from napari_pyramids._napari.sample_data import begin_sample

    viewer = make_napari_viewer(show=True)  # a hidden canvas draws black
    path = tmp_path / "sample.ome.zarr"
    # In memory: level 0 the writer fills as it goes, as File > Open Sample shows it.
    level0 = np.zeros((2, 4, 512, 512), dtype=np.uint16) if in_memory else None
    planes = begin_sample(path, size=512, depth=4, into=level0)
    # The layers are read (their chunks still empty) before the writer starts, as napari
    # opens a sample: what napari cached then must not be shown once the planes land.
    datas = layer_data(path)
    if in_memory:
        datas = [(level0[c], kwargs, kind) for c, (_, kwargs, kind) in enumerate(datas)]
    layers = [viewer.add_layer(Layer.create(*data)) for data in datas]
    assert not np.asarray(layers[0]._slice.image.raw).any()
    with qtbot.waitSignal(write_in_background(path, planes).finished, timeout=BUILD_TIMEOUT):
        pass

    z = viewer.dims.current_step[0]
    stored = zarr.open_array(path / "0", mode="r")
    for channel, layer in enumerate(layers):
        # napari's slice on show (private; no public accessor to what is drawn).
        np.testing.assert_array_equal(np.asarray(layer._slice.image.raw), stored[channel, z])
    # What is drawn is what layers read afresh from disk draw (an in-memory slice is a view
    # of the buffer: only the screen tells whether napari drew the plane again).
    qtbot.wait(100)  # the window laid out: both screenshots have one size
    shown = viewer.screenshot(canvas_only=True, flash=False)
    for layer, (data, _, _) in zip(layers, layer_data(path), strict=True):
        layer.data = data
    np.testing.assert_array_equal(shown, viewer.screenshot(canvas_only=True, flash=False))
    assert shown[..., :3].any()
    viewer.dims.set_current_step(0, (z + 1) % 4)
    np.testing.assert_array_equal(np.asarray(layers[0]._slice.image.raw), stored[0, (z + 1) % 4])


def test_a_method_change_keeps_level_0_and_a_build_reads_the_image_again(
    qtbot, viewer_and_builder, sample_path
):
    viewer, widget = viewer_and_builder
    _show_preview(qtbot, viewer, widget, sample_path)
    level0 = widget.preview_layers[0].data[0]

    with qtbot.waitSignal(widget.events.preview_updated, timeout=5000):
        widget.method.value = "max"
    nuclei = widget.preview_layers[0]
    # The same dask keys: level 0 was not opened again (each opening has keys of its own).
    assert nuclei.data[0].name == level0.name
    expected = reference_pyramid(sample_planes(512, 4)[0], (1, 2, 2), 3, "max")
    np.testing.assert_array_equal(nuclei.data[2].computed(), expected[2])

    with qtbot.waitSignal(widget.events.build_finished, timeout=BUILD_TIMEOUT) as finished:
        widget.build.clicked()
    assert finished.args == ["built"]
    # The metadata changed on disk: the widget plans from the new levels, not its old read.
    assert widget._images.open(sample_path).level_paths == ("0", "1", "2")


def test_reading_preview_tiles_does_not_import_dask_distributed(tmp_path):
    """dask imports distributed (0.65 s, holding the interpreter lock while napari draws)
    when a scheduler is named by a string; the tiles' reader must not make it do so."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np, dask.array as da\n"
        "from napari_pyramids._napari.preview import UncachedReader\n"
        "a = np.arange(400, dtype=np.uint16).reshape(20, 20)\n"
        "r = UncachedReader(da.from_array(a, chunks=8, name=False))\n"
        "assert (r[3:9, ::2] == a[3:9, ::2]).all()\n"
        "assert 'distributed' not in sys.modules, 'distributed was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
