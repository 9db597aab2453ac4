"""The crafted-input table through the Pyramid Builder in a real napari viewer (issue 6).

Every row of ``crafted.CASES`` that a person (or a script driving the widget) can express is
run through the widget: the crafted image is opened with ``open_path`` (our reader), the
row's keywords are set on the controls, and Build is clicked. The refusal must show on the
status line and in one napari notification, both literally, with the row's words, and
nothing inside or outside the image may change. Rows the widget cannot express are listed
below with the reason. Rows share one viewer per test (a viewer costs about a second);
each row is its own subtest, reported by its id.

The second half gives names from the metadata (channel labels, multiscale and axis names,
level paths, label images, folder names) markup, entities, runs of spaces, a forged line, a
right-to-left override and great length: every label shows them as plain text, with
invisible characters spelled out, and the layers keep the literal names.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from napari._qt.dialogs.qt_notification import NapariQtNotification
from napari.utils.notifications import Notification, notification_manager
from qtpy.QtCore import Qt
from qtpy.QtGui import QTextDocument
from qtpy.QtWidgets import QLabel

from crafted import (
    CASES,
    DATA,
    HARMLESS,
    Case,
    Crafted,
    folder_snapshot,
    read_doc,
)
from imaging import file_hashes, level_paths, reference_pyramid, write_image

pytestmark = pytest.mark.gui
BUILD_TIMEOUT = 60_000
BY_ID = {case.id: case for case in CASES}

# --- how a row reaches the widget -------------------------------------------------------------

CONTROLS = ("num_levels", "coarsening_xy", "coarsening_z", "method", "edge", "overwrite")
# Not controls, but documented attributes a script sets on the widget.
ATTRIBUTES = ("memory_budget", "workers")

# Rows the widget cannot express at all.
NOT_IN_THE_WIDGET = {
    "factor-2.5": "the factor is an integer spin box: 2.5 cannot be typed in it",
    "factor-string": "the factor is an integer spin box: it holds a number, never text",
    "aggregation-function-and-method": "the widget offers named methods only, no callable",
    "aggregation-function-not-callable": "the widget offers named methods only, no callable",
    "open-array-kwargs-unsupported": "the widget has no zarr keywords; new levels copy level 0",
    "open-array-kwargs-separator-on-v3": "the widget has no zarr keywords; new levels copy 0",
    "zarrurl-not-a-path": "open_path and the reader take a path; 42 is a mistake of API callers",
}

# Rows whose value the control itself refuses (range, choices, type): no build can start.
HELD_BY_THE_CONTROL = {
    "factor-0": "coarsening_xy",
    "factor-1": "coarsening_xy",
    "factor-minus-2": "coarsening_xy",
    "factor-true": "coarsening_xy",
    "levels-0": "num_levels",
    "levels-minus-1": "num_levels",
    "method-unknown": "method",
    "edge-unknown": "edge",
    "overwrite-not-bool": "overwrite",
    # The spin boxes offer only what the image allows: no Z factor without a Z axis, no
    # more levels than fit before a level gets below one pixel.
    "z-factor-without-z": "coarsening_z",
    "too-many-levels": "num_levels",
}

# Rows the widget refuses in its own words, and why they differ from the library's.
WIDGET_WORDS = {
    # The widget refuses to rebuild an existing pyramid before planning, naming its checkbox.
    "existing-listed-level": ("already multiscale", "2 levels", "tick 'overwrite'"),
    # A stray level the metadata does not list: the planner finds it, the widget names the box.
    "existing-unlisted-array": ("'1'", "already exists", "tick 'overwrite'"),
    # The chunk size is typed as text: its parser counts the numbers against the axes.
    "chunksize-wrong-length": ("'1,16,16'", "3 numbers", "2 axes", "leave it blank"),
    # The reader opens every listed level to show it, so a listed level that is a link to
    # a folder holding no array is refused on opening, before any write could be planned.
    "link-listed-level-overwrite": ("'1'", "{root}/1 holds no zarr array", "fix the metadata"),
    "link-level-to-drop": ("'1'", "{root}/1 holds no zarr array", "fix the metadata"),
    "metadata-lists-labels-group-as-level-overwrite": (
        "'labels'", "{target} holds no zarr array", "fix the metadata",
    ),
    # napari reads level 0 to set the contrast when the layer is made: a chunk bigger than
    # the data it holds fails to decode there, before any plan (and its budget) exists.
    "chunk-bigger-than-default-budget": ("{root}/0", "could not be read", "restore"),
    "chunk-bigger-than-given-budget": ("{root}/0", "could not be read", "restore"),
    "v3-shard-bigger-than-budget": ("{root}/0", "could not be read", "restore"),
}  # fmt: skip


@dataclass(frozen=True)
class Settings:
    """What a row sets in the widget: control values and scripted attributes."""

    controls: dict[str, Any] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)


def widget_settings(case: Case) -> Settings | None:
    """The controls and attributes that express ``case``'s keywords; None if it cannot."""
    if case.id in NOT_IN_THE_WIDGET:
        return None
    controls: dict[str, Any] = {"num_levels": 2}  # as the CLI rows: a pyramid is asked for
    attributes: dict[str, Any] = {}
    for key, value in case.kwargs.items():
        if key in CONTROLS:
            controls[key] = value
        elif key == "chunksize":
            controls[key] = ",".join(str(c) for c in value)
        elif key in ATTRIBUTES:
            attributes[key] = value
        else:
            raise ValueError(f"case {case.id}: {key}={value!r} has no widget spelling")
    return Settings(controls, attributes)


RUN_CASES = [
    case
    for case in CASES
    if case.id not in NOT_IN_THE_WIDGET and case.id not in HELD_BY_THE_CONTROL
]


def widget_words(case: Case, crafted: Crafted) -> list[str]:
    words = WIDGET_WORDS.get(case.id)
    if words is None:
        return case.message_words(crafted)
    return [w.format(**crafted.names) for w in words]


# --- what the widget shows --------------------------------------------------------------------


def visible(text: str) -> str:
    """``text`` as a label must show it: invisible and control characters escaped."""
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )


def displayed_text(label: QLabel) -> str:
    """The characters ``label`` shows: its text, or what its text renders to as rich text.

    QLabel decides as Qt's own ``mightBeRichText`` does in auto mode; a rich text's
    characters are what Qt's HTML parser makes of it (an image becomes U+FFFC).
    """
    text = label.text()
    form = label.textFormat()
    rich = form == Qt.TextFormat.RichText or (
        form == Qt.TextFormat.AutoText and Qt.mightBeRichText(text)
    )
    if not rich:
        return text
    document = QTextDocument()
    document.setHtml(text)
    return document.toPlainText()


def notification_shows(record: Notification) -> str:
    """What napari's notification pop-up shows for ``record`` (built as napari builds it)."""
    popup = NapariQtNotification.from_notification(record)
    try:
        return displayed_text(popup.message)
    finally:
        popup.close()
        popup.deleteLater()


@dataclass
class Seen:
    refusals: list[str] = field(default_factory=list)
    outcomes: list[str] = field(default_factory=list)
    notifications: list[Notification] = field(default_factory=list)


@contextmanager
def watching(widget) -> Iterator[Seen]:
    """Record the widget's refusals and build outcomes, and napari's new notifications."""
    seen = Seen()
    first = len(notification_manager.records)
    widget.events.refused.connect(seen.refusals.append)
    widget.events.build_finished.connect(seen.outcomes.append)
    try:
        yield seen
    finally:
        widget.events.refused.disconnect(seen.refusals.append)
        widget.events.build_finished.disconnect(seen.outcomes.append)
        seen.notifications[:] = notification_manager.records[first:]


def reset(viewer, widget) -> None:
    """An empty viewer and the same engine settings (one worker, threads) for every row."""
    if widget.worker is not None and widget.worker.is_running:
        widget.worker.quit()
        widget.worker.await_workers()
    if viewer.layers:  # clear() runs a full garbage collection even on an empty list
        viewer.layers.clear()
    widget.memory_budget = None
    widget.workers = 1
    widget.executor = None


def apply(widget, settings: Settings) -> None:
    for name, value in settings.controls.items():
        widget[name].value = value
    for name, value in settings.attributes.items():
        setattr(widget, name, value)


def click_build(qtbot, widget, seen: Seen) -> str:
    """Click Build; 'refused' if it refused at once, else the finished build's outcome."""
    widget.build.clicked()
    if seen.refusals:
        return "refused"
    assert widget.worker is not None, "neither refused nor started"
    # The worker reports through queued signals: nothing can arrive before we wait.
    with qtbot.waitSignal(widget.events.build_finished, timeout=BUILD_TIMEOUT):
        pass
    return seen.outcomes[-1]


# --- the table --------------------------------------------------------------------------------


def run_row(qtbot, viewer, widget, case: Case, tmp: Path) -> None:
    crafted = case.build(tmp)
    before = crafted.snapshot()
    settings = widget_settings(case)
    with qtbot.captureExceptions() as exceptions, watching(widget) as seen:
        layers = widget.open_path(crafted.zarrurl)
        if not layers:
            stage = "open"
            assert len(viewer.layers) == 0, "a refused image left layers behind"
        else:
            apply(widget, settings)
            stage = click_build(qtbot, widget, seen)
    assert not exceptions, f"exceptions escaped: {exceptions}"
    assert crafted.snapshot() == before, f"{stage}: something changed on disk"
    words = widget_words(case, crafted)

    if stage == "failed":  # refused by the engine once the build ran (before writing)
        assert seen.refusals == []
        message = widget.status.value.removeprefix("Build failed: ")
        assert widget.status.value == "Build failed: " + message
        [note] = seen.notifications
        assert note.severity == "error"
        expected_note = visible(f"Pyramid build failed: {message}")
    else:
        assert stage in ("open", "refused"), f"the build was not refused: {stage}"
        [message] = seen.refusals
        assert_said_once(widget, message)
        [note] = seen.notifications
        assert note.severity == "warning"
        expected_note = visible(message)
        assert widget.worker is None or not widget.worker.is_running
    for word in words:
        assert word.lower() in message.lower(), f"{stage}: {word!r} missing from: {message}"
    assert widget.status.native.textFormat() == Qt.TextFormat.PlainText
    assert displayed_text(widget.status.native) == widget.status.value
    assert notification_shows(note) == expected_note


def test_crafted_input_is_refused_in_the_widget_and_nothing_is_written(
    qtbot, viewer_and_builder, tmp_path, subtests
):
    viewer, widget = viewer_and_builder
    reset(viewer, widget)
    for index, case in enumerate(RUN_CASES):
        with subtests.test(msg=case.id):
            row = tmp_path / str(index)  # short: messages cut long paths at 100 characters
            row.mkdir()
            try:
                run_row(qtbot, viewer, widget, case, row)
            finally:
                reset(viewer, widget)


def test_values_the_controls_cannot_hold_never_reach_a_build(
    qtbot, viewer_and_builder, tmp_path, subtests
):
    viewer, widget = viewer_and_builder
    reset(viewer, widget)
    for index, (case_id, name) in enumerate(HELD_BY_THE_CONTROL.items()):
        case = BY_ID[case_id]
        with subtests.test(msg=case_id):
            row = tmp_path / str(index)
            row.mkdir()
            try:
                crafted = case.build(row)
                before = crafted.snapshot()
                with qtbot.captureExceptions() as exceptions:
                    assert widget.open_path(crafted.zarrurl)
                    kept = widget[name].value
                    with pytest.raises((ValueError, TypeError)):
                        widget[name].value = case.kwargs[name]
                    assert widget[name].value == kept
                assert not exceptions
                assert widget.worker is None
                assert crafted.snapshot() == before
            finally:
                reset(viewer, widget)


def test_every_row_is_run_held_or_skipped_for_a_reason():
    ids = {case.id for case in CASES}
    assert set(NOT_IN_THE_WIDGET) <= ids
    assert set(HELD_BY_THE_CONTROL) <= ids
    assert set(WIDGET_WORDS) <= {case.id for case in RUN_CASES}
    assert not set(NOT_IN_THE_WIDGET) & set(HELD_BY_THE_CONTROL)
    for case in RUN_CASES:
        assert widget_settings(case) is not None
    for case_id, name in HELD_BY_THE_CONTROL.items():
        assert name in BY_ID[case_id].kwargs


# --- crafted images that build ----------------------------------------------------------------

# Crafted images the widget builds end to end (the library runs every HARMLESS row).
WIDGET_HARMLESS = (
    "level0-folder-links-outside",
    "level0-v3-zarr-json-links-outside",
    "level0-named-1-is-never-replaced",
    "leftover-build-folder-is-a-link",
    "forged-journal-moves-aside-folder-outside",
    "labels-parent-ome-is-a-string",
    "level0-division-slash",
)
HARMLESS_BY_ID = {case.id: case for case in HARMLESS}


def test_harmless_crafted_images_build_through_the_widget(
    qtbot, viewer_and_builder, tmp_path, subtests
):
    viewer, widget = viewer_and_builder
    reset(viewer, widget)
    for index, case_id in enumerate(WIDGET_HARMLESS):
        case = HARMLESS_BY_ID[case_id]
        with subtests.test(msg=case_id):
            row = tmp_path / str(index)
            row.mkdir()
            try:
                crafted = case.build(row)
                root = Path(crafted.zarrurl)
                level0 = level_paths(root)[0]
                outside = [folder_snapshot(folder) for folder in crafted.watch[1:]]
                level0_files = file_hashes(root / level0)
                with qtbot.captureExceptions() as exceptions, watching(widget) as seen:
                    assert widget.open_path(root)
                    apply(widget, Settings({"num_levels": 2, **case.kwargs}))
                    assert click_build(qtbot, widget, seen) == "built", widget.status.value
                assert not exceptions
                assert seen.notifications == []
                assert [folder_snapshot(folder) for folder in crafted.watch[1:]] == outside
                assert file_hashes(root / level0) == level0_files
                paths = level_paths(root)
                reference = reference_pyramid(DATA, (2, 2), len(paths), "mean")
                for path, expected in zip(paths, reference, strict=True):
                    on_disk = zarr.open_array(str(root / path), mode="r")[...]
                    np.testing.assert_array_equal(on_disk, expected)
                [layer] = viewer.layers
                assert layer.multiscale
                assert len(layer.data) == len(paths)
                np.testing.assert_array_equal(np.asarray(layer.data[-1]), reference[-1])
                case.check(root, row)
            finally:
                reset(viewer, widget)


# --- names from the metadata are plain text ---------------------------------------------------

# Names a stranger's image may carry: tags, an image that would fetch a file, a link, HTML
# entities, runs of spaces, a forged line, a right-to-left override, and great length.
MARKUP = {
    "bold": "<b>x</b>",
    "image": "<img src='file:///etc/passwd'>",
    "link": "<a href='https://example.org'>click</a>",
    "entities": "&lt;b&gt; &amp;",
    "tags-and-spaces": "<i>a  b</i>",
    "newline": "line1\nforged line",
    "right-to-left-override": "\u202egnp.exe",
    "long": "<u>" + "L" * 5000,
}
LEVEL0 = "<b>0</b>"  # a valid level path: the folder '<b>0<' holding the array 'b>'


def markup_image(root: Path, name: str) -> Path:
    """Two channels and a label image, every name in the metadata set to ``name``."""
    write_image(root, np.zeros((2, 64, 64), np.uint16), axes="cyx", level_path=LEVEL0)
    doc = read_doc(root / ".zattrs")
    multiscale = doc["multiscales"][0]
    multiscale["name"] = name
    multiscale["axes"][0]["name"] = name
    doc["omero"] = {"channels": [{"label": name}, {"label": "c2 " + name}]}
    (root / ".zattrs").write_text(json.dumps(doc))
    label = root / "labels" / "<i>cells"
    write_image(label, np.zeros((64, 64), np.uint8), labels=True)
    doc = read_doc(label / ".zattrs")
    doc["multiscales"][0]["name"] = "labels " + name
    (label / ".zattrs").write_text(json.dumps(doc))
    (root / "labels" / ".zgroup").write_text('{"zarr_format": 2}')
    (root / "labels" / ".zattrs").write_text(json.dumps({"labels": ["<i>cells"]}))
    return root


def layer_name(name: str) -> str:
    """A name from the metadata as a layer keeps it: literal, cut at 200 characters."""
    return name.strip()[:200]


def assert_plain(label: QLabel) -> None:
    assert label.textFormat() == Qt.TextFormat.PlainText
    assert displayed_text(label) == label.text()


def test_names_from_metadata_stay_literal_in_layers_and_labels(
    qtbot, viewer_and_builder, tmp_path, subtests
):
    viewer, widget = viewer_and_builder
    reset(viewer, widget)
    for index, (key, name) in enumerate(MARKUP.items()):
        with subtests.test(msg=key):
            root = markup_image(tmp_path / str(index) / "img.zarr", name)
            try:
                with qtbot.captureExceptions() as exceptions, watching(widget) as seen:
                    layers = widget.open_path(root)
                    names = [layer.name for layer in layers]
                    assert names == [
                        layer_name(name), layer_name("c2 " + name), layer_name("labels " + name)
                    ]  # fmt: skip
                    items = [widget.image.native.itemText(i) for i in range(len(layers))]
                    assert sorted(items) == sorted(visible(n) for n in names)
                    widget.image.value = layers[0]
                    widget.num_levels.value = 2
                    for label in (widget.info, widget.summary, widget.status):
                        assert_plain(label.native)
                    info = widget.info.value.split("\n")
                    assert len(info) == 3, info  # no line forged by a name
                    assert f"image: {visible(name)},y,x 2×64×64 uint16" in info[1]
                    assert "level 1 (<b>1</b>): 2×32×32" in widget.summary.value

                    assert click_build(qtbot, widget, seen) == "built", widget.status.value
                assert not exceptions
                assert seen.notifications == []
                assert (root / "<b>1<" / "b>").is_dir()
                assert [layer.name for layer in viewer.layers] == names
                # The label image is built with its image (the "labels" box is on by default).
                assert [layer.multiscale for layer in viewer.layers] == [True, True, True]
                assert widget.status.value == "Built 2 levels of img.zarr and its 1 label image."
                assert_plain(widget.status.native)
            finally:
                reset(viewer, widget)


def folder_name(name: str) -> str:
    """``name`` as a folder name: no '/', at most 255 bytes."""
    return name.replace("/", "|")[:200] + ".zarr"


def assert_said_once(widget, message: str) -> None:
    """``message`` shows literally once in the widget: on the status line, or in the summary
    that gave the reason before the click (the status then points at the summary)."""
    if "summary above" in widget.status.value:
        assert widget.summary.value == visible(f"Nothing to build as set: {message}")
        assert_plain(widget.summary.native)
        assert visible(message) not in widget.status.value
    else:
        assert widget.status.value == visible(message)


def refusal_shown(qtbot, widget, act, *args) -> str:
    """Run ``act(*args)``; check its one refusal shows literally on the status line and pop-up."""
    with qtbot.captureExceptions() as exceptions, watching(widget) as seen:
        act(*args)
    assert not exceptions
    [message] = seen.refusals
    assert_said_once(widget, message)
    assert_plain(widget.status.native)
    [note] = seen.notifications
    assert notification_shows(note) == visible(message)
    return message


def test_refusals_quoting_crafted_names_show_them_literally(
    qtbot, viewer_and_builder, tmp_path, subtests
):
    """Refusals quote the folder and the axis names; both are shown exactly as they are."""
    viewer, widget = viewer_and_builder
    reset(viewer, widget)
    for index, (key, name) in enumerate(MARKUP.items()):
        with subtests.test(msg=key):
            # A folder named so, whose metadata lacks its axes: refused on opening.
            root = tmp_path / str(index) / folder_name(name)
            write_image(root, DATA)
            doc = read_doc(root / ".zattrs")
            del doc["multiscales"][0]["axes"]
            (root / ".zattrs").write_text(json.dumps(doc))
            # An image whose Y axis is a time axis named so: refused when Build is clicked.
            other = write_image(tmp_path / str(index) / "axes.zarr", DATA)
            doc = read_doc(other / ".zattrs")
            doc["multiscales"][0]["axes"][0] = {"name": name, "type": "time"}
            (other / ".zattrs").write_text(json.dumps(doc))
            before = folder_snapshot(root.parent)
            try:
                message = refusal_shown(qtbot, widget, widget.open_path, root)
                # The folder is quoted as is, or escaped if it holds a control character.
                assert f"{root}: multiscales[0].axes is missing" in message or (
                    f"{str(root)!r} contains a NUL or control character" in message
                )
                assert widget.open_path(other)
                widget.num_levels.value = 2
                message = refusal_shown(qtbot, widget, widget.build.clicked)
                assert f"from the axes {[name, 'x']}; name them 'y' and 'x'" in message
                assert folder_snapshot(root.parent) == before
            finally:
                reset(viewer, widget)


def test_a_failed_build_naming_a_crafted_folder_notifies_it_literally(
    qtbot, viewer_and_builder, tmp_path
):
    """The error notification of a build that fails in the worker shows the path as is."""
    _, widget = viewer_and_builder
    root = write_image(tmp_path / "<b>a  &lt;b&gt;<i>.zarr", DATA)
    os.symlink(tmp_path / "elsewhere", root / ".napari-pyramids.lock")  # refused mid-build
    before = folder_snapshot(tmp_path)
    assert widget.open_path(root)
    widget.num_levels.value = 2
    with qtbot.captureExceptions() as exceptions, watching(widget) as seen:
        assert click_build(qtbot, widget, seen) == "failed"
    assert not exceptions
    message = widget.status.value.removeprefix("Build failed: ")
    assert message == f"{root}/.napari-pyramids.lock is a symbolic link; remove it and run again"
    assert_plain(widget.status.native)
    [note] = seen.notifications
    assert note.severity == "error"
    assert notification_shows(note) == f"Pyramid build failed: {message}"
    assert folder_snapshot(tmp_path) == before
