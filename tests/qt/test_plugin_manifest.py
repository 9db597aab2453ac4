"""The npe2 manifest: valid, found by napari, and every command importable."""

from __future__ import annotations

from pathlib import Path

import pytest
from npe2 import PluginManager, PluginManifest
from npe2.manifest.utils import import_python_name

import napari_pyramids

pytestmark = pytest.mark.gui


def test_manifest_is_shipped_and_every_command_imports():
    shipped = Path(napari_pyramids.__file__).parent / "napari.yaml"
    manifest = PluginManifest.from_file(shipped)

    assert shipped.resolve() == (Path(__file__).parents[2] / "napari.yaml").resolve()
    for command in manifest.contributions.commands:
        assert callable(import_python_name(command.python_name)), command.id


def test_napari_lists_the_widget_reader_writers_and_samples():
    manager = PluginManager.instance()
    manager.discover()  # what napari does at start-up; already-known plugins are kept
    manifest = manager.get_manifest("napari-pyramids")

    contributions = manifest.contributions
    assert [w.display_name for w in contributions.widgets] == ["Pyramid Builder"]
    assert contributions.readers[0].accepts_directories
    writers = sorted(tuple(w.layer_types) for w in contributions.writers)
    assert writers == [
        ("image+",),
        ("image+",),
        ("image+", "labels+"),
        ("image+", "labels+"),
        ("labels",),
    ]
    assert [s.key for s in contributions.sample_data] == ["sample", "sample_v3"]
