"""The command line on whole datasets: one command for a plate, a summary table, an exit
status that says whether any image failed, and a rerun that finishes an interrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

import faultkit
from napari_pyramids.cli import main
from plates import assert_built, ome_zarr_plate, validate_image, validate_plate


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_build_plate_prints_what_it_is_and_a_summary(tmp_path, rng, capsys, version):
    root = tmp_path / "plate.zarr"
    data = ome_zarr_plate(root, version, rng)
    assert main(["build", str(root), "--levels", "3"]) == 0
    out, err = capsys.readouterr()
    zarr_format = 2 if version == "0.4" else 3
    lines = out.splitlines()
    assert (
        lines[0]
        == f"{root}: a plate (zarr v{zarr_format} / NGFF {version}), 2 rows x 2 columns, 2 wells"
    )
    assert lines[1].split() == ["image", "status", "levels"]
    assert [line.split()[:3] for line in lines[2:7]] == [
        ["A/1/0", "built", "3"],
        ["A/1/0/labels/cells", "built", "3"],
        ["A/1/1", "built", "3"],
        ["B/2/0", "built", "3"],
        ["B/2/1", "built", "3"],
    ]
    assert lines[7] == "5 images: 5 built"
    assert "images 5/5" in err  # one bar over images and blocks, on stderr
    assert "warning" not in err
    assert_built(root, data, 3)
    validate_plate(root)
    validate_image(root / "A/1/0")

    assert main(["build", str(root), "--levels", "3", "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[-1] == "5 images: 5 already complete"
    assert err == ""


def test_a_refused_image_is_listed_with_its_reason_and_exit_status_2(tmp_path, rng, capsys):
    root = tmp_path / "plate.zarr"
    data = ome_zarr_plate(root, "0.4", rng, label_fields=())
    (root / "B/2/1/.zattrs").write_text(
        '{"multiscales": [{"version": "0.4", "datasets": "oops"}]}'
    )
    assert main(["build", str(root), "--levels", "2", "--quiet"]) == 2
    out, _ = capsys.readouterr()
    row = next(line for line in out.splitlines() if line.startswith("B/2/1"))
    assert row.split()[1:3] == ["refused", "-"]
    assert "datasets must be a non-empty list" in row
    assert out.splitlines()[-1] == "4 images: 3 built, 1 refused"
    assert_built(root, {k: v for k, v in data.items() if k != "B/2/1"}, 2)
    # The others are complete; the refused one still is: the status stays non-zero.
    assert main(["build", str(root), "--levels", "2", "--quiet"]) == 2
    assert capsys.readouterr().out.splitlines()[-1] == "4 images: 3 already complete, 1 refused"


def test_info_on_a_plate_lists_its_images_levels_and_labels_out_of_step(tmp_path, rng, capsys):
    root = tmp_path / "plate.zarr"
    ome_zarr_plate(root, "0.5", rng)
    assert main(["build", str(root / "A/1/0"), "--levels", "3", "--skip-labels", "--quiet"]) == 0
    err = capsys.readouterr().err
    fix = f"napari-pyramids build {root}/A/1/0/labels/cells --levels 3"
    assert f"warning: label image {root}/A/1/0/labels/cells has 1 level but its image" in err
    assert fix in err
    assert main(["info", str(root)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{root}: a plate (zarr v3 / NGFF 0.5), 2 rows x 2 columns, 2 wells"
    assert out[1] == "  A/1/0: image, 3 levels, shape (2, 48, 40) uint16"
    assert out[2] == "  A/1/0/labels/cells: labels, 1 level, shape (48, 40) uint32"
    assert out[3] == "  A/1/1: image, 1 level, shape (2, 48, 40) uint16"
    assert out[-1].startswith("  out of step: label image")
    assert out[-1].endswith(fix)


def test_info_on_a_v3_well_says_it_is_a_well_and_lists_its_fields(tmp_path, rng, capsys):
    root = tmp_path / "plate.zarr"
    ome_zarr_plate(root, "0.5", rng, label_fields=())
    assert main(["info", str(root / "B/2")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [
        f"{root}/B/2: a well (zarr v3 / NGFF 0.5), 2 fields",
        "  0: image, 1 level, shape (2, 48, 40) uint16",
        "  1: image, 1 level, shape (2, 48, 40) uint16",
    ]
    assert "shape must be a list" not in out


def test_building_a_label_image_alone_warns_with_the_fix(tmp_path, rng, capsys):
    root = tmp_path / "plate.zarr"
    ome_zarr_plate(root, "0.4", rng, wells=("A/1",), fields=1)
    label = root / "A/1/0/labels/cells"
    assert main(["build", str(label), "--levels", "2", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "level 1 's1': shape (24, 20)" in captured.out  # the single-image output
    fix = f"napari-pyramids build {root}/A/1/0 --levels 2"
    assert f"has 2 levels but its image {root}/A/1/0 has 1 level" in captured.err
    assert fix in captured.err
    # The fix builds the image; its label image is then complete, in step.
    assert main([*fix.split()[1:], "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[-1] == "2 images: 1 built, 1 already complete"
    assert err == ""
    validate_image(root / "A/1/0")


def test_kill_9_mid_plate_then_rerun_finishes_and_exits_0(tmp_path, rng, capsys):
    root = tmp_path / "plate.zarr"
    wells = ("A/1", "A/2", "B/1", "B/2", "C/1", "C/2")
    data = ome_zarr_plate(root, "0.4", rng, wells=wells, fields=2, label_fields=("B/1/0",))
    child = faultkit.start(
        faultkit.child_dataset_build, str(root), {"num_levels": 3, "images_at_once": 3}
    )
    message = child.wait_for(("image", "end"))
    assert message[0] == "image"
    child.kill()
    finished = [m for m in child.messages if m[0] == "image"]
    assert len(finished) < len(data)
    assert main(["build", str(root), "--levels", "3", "--quiet"]) == 0
    out = capsys.readouterr().out.splitlines()
    statuses = [line.split()[1] for line in out[2:-1]]
    assert set(statuses) <= {"built", "already"}
    assert "built" in statuses
    assert_built(root, data, 3)
    validate_plate(root)
    assert main(["build", str(root), "--levels", "3", "--quiet"]) == 0
    assert (
        capsys.readouterr().out.splitlines()[-1]
        == f"{len(data)} images: {len(data)} already complete"
    )


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT is how a terminal's Ctrl-C arrives")
@pytest.mark.parametrize("processes", ["1", "2"], ids=["threads", "worker-processes"])
def test_ctrl_c_mid_plate_prints_what_was_done_and_the_rerun_finishes(tmp_path, rng, processes):
    root = tmp_path / "plate.zarr"
    wells = tuple(f"{r}/{c}" for r in "ABCD" for c in "123")
    data = ome_zarr_plate(root, "0.5", rng, wells=wells, fields=2, label_fields=())
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    argv = [sys.executable, "-m", "napari_pyramids.cli", "build", str(root), "--levels", "3"]
    process = subprocess.Popen(
        [*argv, "--images-at-once", processes, "--processes", processes], env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    seen = ""
    while "images 2/" not in seen:
        char = process.stderr.read(1)
        assert char, f"the build ended before two images: {seen}"
        seen += char
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    assert "interrupted" in err
    assert "Run the same command again" in err
    assert "interrupted" in out.splitlines()[-1]
    done = subprocess.run([*argv, "--quiet"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith(f"{len(data)} images:")
    assert "refused" not in done.stdout
    assert_built(root, data, 3)
    summary = json.dumps(done.stdout)
    assert "already complete" in summary
