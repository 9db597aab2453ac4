"""options.BuildOptions: every build parameter parsed once, the same for the API and the CLI."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import zarr

from imaging import level_paths, tree_snapshot, write_image
from napari_pyramids import PyramidError, build_pyramid, engine, open_image, plan_pyramid
from napari_pyramids.cli import main
from napari_pyramids.options import BuildOptions


def test_text_and_sequences_parse_to_the_same_options():
    typed = BuildOptions(chunksize=" (1, 16,16) ", memory_budget="512MiB")
    given = BuildOptions(chunksize=[1, 16, 16], memory_budget=512 * 2**20)
    assert typed == given
    assert typed.chunksize == (1, 16, 16)
    assert typed.memory_budget == 536_870_912
    assert BuildOptions(chunksize="  ").chunksize is None
    assert BuildOptions().memory_budget == 256 * 2**20
    with pytest.raises(dataclasses.FrozenInstanceError):
        typed.chunksize = (2, 2, 2)  # type: ignore[misc]


def test_parsed_options_reach_the_plan_unchanged(tmp_path):
    root = write_image(tmp_path / "a.zarr", np.zeros((4, 300, 260), np.uint8), chunks=(1, 64, 64))
    plan = plan_pyramid(open_image(root), BuildOptions(num_levels="auto", chunksize="2,32,32"))
    # "auto": halve Y and X until both are at most about 256 px (300 -> 150).
    assert [lv.shape for lv in plan.levels] == [(4, 300, 260), (4, 150, 130)]
    assert plan.levels[1].chunks == (2, 32, 32)
    assert plan.memory_budget == 256 * 2**20


def test_keywords_and_options_are_not_mixed(tmp_path):
    root = write_image(tmp_path / "a.zarr", np.zeros((32, 32), np.uint8))
    with pytest.raises(TypeError, match="not both"):
        plan_pyramid(open_image(root), BuildOptions(), num_levels=3)
    with pytest.raises(TypeError, match="not both"):
        next(engine.iter_build(root, BuildOptions(), num_levels=3))
    assert level_paths(root) == ["0"]


@pytest.mark.parametrize(
    ("kwargs", "args"),
    [
        ({"chunksize": (0, 16)}, ["--chunks=0,16"]),
        ({"chunksize": (1, 16, 16)}, ["--chunks", "1,16,16"]),
        ({"chunksize": "16,a"}, ["--chunks", "16,a"]),
        ({"memory_budget": "lots"}, ["--memory", "lots"]),
        ({"memory_budget": "1MiB"}, ["--memory", "1MiB"]),
        ({"workers": 0}, ["--workers", "0"]),
        ({"num_levels": 0}, ["--levels", "0"]),
        ({"num_levels": 9}, ["--levels", "9"]),
        ({"coarsening_xy": 1}, ["--factor", "1"]),
        ({"coarsening_z": 2}, ["--z-factor", "2"]),
    ],
)
def test_api_and_cli_refuse_with_the_same_message(tmp_path, capsys, kwargs, args):
    root = write_image(tmp_path / "a.zarr", np.zeros((32, 32), np.uint8))
    before = tree_snapshot(root)
    with pytest.raises(PyramidError) as refused:
        build_pyramid(zarrurl=root, **kwargs)
    assert main(["build", str(root), *args]) == 2
    assert capsys.readouterr().err == f"napari-pyramids: error: {refused.value}\n"
    assert tree_snapshot(root) == before


def test_the_cli_hands_the_engine_one_options_record(tmp_path, rng, monkeypatch, capsys):
    data = rng.integers(0, 999, size=(2, 40, 40), dtype=np.uint16)
    root = write_image(tmp_path / "a.zarr", data, chunks=(1, 8, 8))
    seen = []
    real = engine.iter_build

    def recording(zarrurl, options, **kwargs):
        seen.append(options)
        return real(zarrurl, options, **kwargs)

    monkeypatch.setattr(engine, "iter_build", recording)
    argv = ["build", str(root), "--levels", "3", "--method", "max", "--edge", "keep"]
    argv += ["--chunks", "1,4,4", "--memory", "64MiB", "--workers", "2", "--quiet"]
    assert main(argv) == 0
    assert seen == [
        BuildOptions(
            num_levels=3, method="max", edge="keep", chunksize=(1, 4, 4),
            memory_budget=64 * 2**20, workers=2,
        )
    ]  # fmt: skip
    assert zarr.open_array(root / "2", mode="r").chunks == (1, 4, 4)
    assert "level 2 '2': shape (2, 10, 10)" in capsys.readouterr().out
