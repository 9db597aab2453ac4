"""The command line: build, info and sample, with one-line errors and exit status 2."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import zarr

from imaging import level_paths, reference_pyramid, tree_snapshot, write_image
from napari_pyramids.cli import main


def test_build_writes_levels_and_prints_them(tmp_path, rng, capsys):
    data = rng.integers(0, 999, size=(2, 40, 36), dtype=np.uint16)
    path = write_image(tmp_path / "img.zarr", data, chunks=(1, 8, 8))
    assert main(["build", str(path), "--levels", "3", "--method", "max", "--edge", "keep"]) == 0
    out, err = capsys.readouterr()
    assert "building" in err  # the progress bar goes to stderr
    assert "level 2 '2': shape (2, 10, 9)" in out
    expected = reference_pyramid(data, (1, 2, 2), 3, "max", "keep")
    np.testing.assert_array_equal(zarr.open_array(str(path / "2"))[...], expected[2])


def test_levels_default_to_auto_until_about_256_pixels(tmp_path, rng, capsys):
    path = write_image(tmp_path / "img.zarr", rng.integers(0, 9, size=(1100, 600), dtype=np.uint8))
    assert main(["build", str(path), "--quiet"]) == 0
    shapes = [zarr.open_array(str(path / p)).shape for p in level_paths(path)]
    assert shapes == [(1100, 600), (550, 300), (275, 150), (137, 75)]
    assert capsys.readouterr().err == ""


def test_chunks_z_factor_and_overwrite_options(tmp_path, rng, capsys):
    data = rng.integers(0, 999, size=(8, 32, 32), dtype=np.uint16)
    path = write_image(tmp_path / "img.zarr", data)
    assert main(["build", str(path), "--levels", "2", "--quiet"]) == 0
    args = ["build", str(path), "--levels", "3", "--z-factor", "2", "--chunks", "2,8,8", "--quiet"]
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert zarr.open_array(str(path / "1")).chunks == (2, 8, 8)
    np.testing.assert_array_equal(
        zarr.open_array(str(path / "2"))[...], reference_pyramid(data, (2, 2, 2), 3, "mean")[2]
    )


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--factor", "1"], "coarsening_xy must be an integer >= 2"),
        (["--levels", "40"], "too many"),
        (["--chunks", "1,2,3"], "chunksize"),
        (["--z-factor", "2"], "no Z axis"),
        (["--memory", "lots"], "memory_budget"),
    ],
)
def test_bad_input_is_one_line_exit_two_and_nothing_written(tmp_path, rng, capsys, args, words):
    path = write_image(tmp_path / "img.zarr", rng.integers(0, 9, size=(32, 32), dtype=np.uint8))
    before = tree_snapshot(path)
    assert main(["build", str(path), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("napari-pyramids: error: ")
    assert words in err
    assert tree_snapshot(path) == before


def test_info_describes_every_level(tmp_path, rng, capsys):
    path = write_image(
        tmp_path / "img.zarr", rng.integers(0, 9, size=(3, 64, 64), dtype=np.uint16),
        zarr_format=3, chunks=(1, 16, 16), shards=(1, 32, 32), scale=(1.0, 0.5, 0.5),
    )  # fmt: skip
    assert main(["build", str(path), "--levels", "2", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "zarr v3 / NGFF 0.5, uint16" in out
    assert (
        "level 1 '1': shape (3, 32, 32) chunks (1, 16, 16) shards (1, 32, 32) scale (1, 1, 1)"
        in out
    )
    assert "translation (0, 0.25, 0.25)" in out
    assert "shard[bytes+zstd]" in out


def test_sample_then_build_from_a_real_process(tmp_path):
    path = tmp_path / "sample.zarr"
    cli = [sys.executable, "-m", "napari_pyramids.cli"]
    done = subprocess.run(
        [*cli, "sample", str(path), "--size", "512"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    done = subprocess.run([*cli, "build", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert level_paths(path) == ["0", "1"]
    again = subprocess.run([*cli, "build", str(path)], capture_output=True, text=True)
    assert again.returncode == 2
    assert "Traceback" not in again.stderr
    assert again.stderr.count("\n") == 1


def test_ctrl_c_while_writing_restores_the_image_and_says_so(tmp_path, rng, capsys, monkeypatch):
    import tqdm

    data = rng.integers(0, 999, size=(2, 64, 64), dtype=np.uint16)
    path = write_image(tmp_path / "img.zarr", data, chunks=(1, 16, 16))
    before = tree_snapshot(path)

    def interrupt(bar, n=1):
        raise KeyboardInterrupt

    monkeypatch.setattr(tqdm.tqdm, "update", interrupt)
    assert main(["build", str(path), "--levels", "3"]) == 130
    assert capsys.readouterr().err.endswith("napari-pyramids: cancelled; the image is unchanged\n")
    assert tree_snapshot(path) == before


def test_ctrl_c_after_the_publish_reports_the_pyramid_built(tmp_path, rng, capsys, monkeypatch):
    """Interrupted while the finished build cleans up: the levels are there, and it says so."""
    from napari_pyramids.storage import transaction as store

    data = rng.integers(0, 999, size=(2, 64, 64), dtype=np.uint16)
    path = write_image(tmp_path / "img.zarr", data, chunks=(1, 16, 16))

    def interrupt(folder):
        raise KeyboardInterrupt

    monkeypatch.setattr(store.BuildFolder, "remove", interrupt)
    assert main(["build", str(path), "--levels", "3", "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert "interrupted after the new levels were published; the pyramid is complete" in err
    assert "cancelled" not in err
    assert "level 2 '2': shape (2, 16, 16)" in out
    expected = reference_pyramid(data, (1, 2, 2), 3, "mean")
    np.testing.assert_array_equal(zarr.open_array(str(path / "2"))[...], expected[2])
    monkeypatch.undo()
    # The next build of the image removes the clean-up's leftover (and has nothing to add).
    assert [n for n in path.iterdir() if n.name.startswith(".napari-pyramids-build-")]
    assert main(["build", str(path), "--levels", "3", "--quiet"]) == 2
    assert "level '1' already exists" in capsys.readouterr().err
    assert not [n for n in path.iterdir() if n.name.startswith(".napari-pyramids")]


def test_a_closed_pipe_ends_quietly_with_no_traceback(tmp_path, rng):
    """``napari-pyramids info IMAGE | head -1``: the reader has gone before we write."""
    import os

    path = write_image(tmp_path / "img.zarr", rng.integers(0, 9, (64, 64), dtype=np.uint8))
    for command in (["info", str(path)], ["sample", str(tmp_path / "s.zarr"), "--size", "64"]):
        read, write = os.pipe()
        os.close(read)  # every write of the child now meets a closed pipe
        try:
            done = subprocess.run(
                [sys.executable, "-m", "napari_pyramids.cli", *command],
                stdout=write,
                stderr=subprocess.PIPE,
                text=True,
                timeout=120,
            )
        finally:
            os.close(write)
        assert done.stderr == "", command
        assert done.returncode == 141, command
