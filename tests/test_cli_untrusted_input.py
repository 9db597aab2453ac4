"""The crafted-input table through the command line: exit 2, one line, nothing written.

Most rows run ``napari_pyramids.cli.main`` in this process (fast); a few run the real
``python -m napari_pyramids.cli`` to prove the exit status and the absence of a traceback
end to end.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence

import pytest

from crafted import CASES, Case, cli_arguments, image, write_doc
from imaging import tree_snapshot
from napari_pyramids.cli import main

CLI_CASES = [case for case in CASES if cli_arguments(case) is not None]
BY_ID = {case.id: case for case in CASES}


def run_main(argv: Sequence[str]) -> int:
    try:
        return main(list(argv))
    except SystemExit as exit_:  # argparse refusals exit from inside main
        return int(exit_.code)


def terminal_view(err: str) -> list[str]:
    """The lines a terminal shows: each ends at a newline, a carriage return starts over."""
    return [line.rsplit("\r", 1)[-1] for line in err.split("\n")]


def assert_one_line_refusal(err: str, case: Case, crafted, cli: bool = True) -> None:
    assert err.count("\n") == 1, err
    assert err.endswith("\n")
    # A refusal met mid-build (a crafted chunk file) may follow an erased progress bar.
    line, after = terminal_view(err)
    assert after == ""
    assert line.startswith("napari-pyramids: error: "), err
    assert "Traceback" not in err
    for word in case.message_words(crafted, cli=cli):
        assert word.lower() in line.lower(), f"{word!r} missing from: {err}"


@pytest.mark.parametrize("case", CLI_CASES, ids=lambda case: case.id)
def test_crafted_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, case: Case):
    crafted = case.build(tmp_path)
    before = crafted.snapshot()
    code = run_main(["build", crafted.zarrurl, *cli_arguments(case)])
    out, err = capsys.readouterr()
    assert code == 2, err
    assert out == ""
    assert_one_line_refusal(err, case, crafted)
    assert crafted.snapshot() == before


@pytest.mark.parametrize(
    "case_id",
    [
        "level-path-dotdot",
        "link-new-level-outside-overwrite",
        "json-not-utf8",
        "shape-1e15-voxels",
        "factor-2.5",
        "chunk-file-links-to-dev-zero",
        "chunk-file-corrupt",
    ],
)
def test_crafted_input_in_a_real_process_exits_2_without_traceback(tmp_path, case_id):
    case = BY_ID[case_id]
    crafted = case.build(tmp_path)
    before = crafted.snapshot()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "napari_pyramids.cli",
            "build",
            crafted.zarrurl,
            *cli_arguments(case),
        ],
        capture_output=True,  # bytes: text mode would turn the bar's "\r" into newlines
    )
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert done.stdout == b""
    assert_one_line_refusal(err, case, crafted)
    assert crafted.snapshot() == before


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_info_on_crafted_input_prints_or_refuses_in_one_line(tmp_path, capsys, case: Case):
    crafted = case.build(tmp_path)
    if not isinstance(crafted.zarrurl, str):
        pytest.skip("a command line argument is always text")
    before = crafted.snapshot()
    code = run_main(["info", crafted.zarrurl])
    out, err = capsys.readouterr()
    if code == 0:
        assert err == ""
        assert out.startswith(str(crafted.zarrurl))
    else:
        assert code == 2
        assert out == ""
        assert err.count("\n") == 1, err
        assert err.startswith("napari-pyramids: error: ")
    assert crafted.snapshot() == before


def test_names_from_metadata_cannot_drive_the_terminal(tmp_path, capsys):
    root = image(tmp_path, axes="yx")
    doc = json.loads((root / ".zattrs").read_text())
    doc["multiscales"][0]["axes"][0]["name"] = "\x1b]0;owned\x07y\x1b[2J"
    doc["multiscales"][0]["axes"][1]["unit"] = "\u202emicrometer"
    write_doc(root / ".zattrs", doc)
    assert run_main(["info", str(root)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert "\x07" not in out
    assert "\u202e" not in out
    assert "\\x1b]0;owned\\x07y\\x1b[2J" in out
    assert "\\u202emicrometer" in out


def test_refusal_naming_a_disguised_folder_stays_escaped(tmp_path, capsys):
    """A downloaded folder may be named to disguise itself: messages print it escaped."""
    root = tmp_path / "lab" / "\u202egmi.zarr"
    root.mkdir(parents=True)
    (root / "readme.txt").write_text("not zarr")
    before = tree_snapshot(root)
    assert run_main(["build", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "\u202e" not in err
    assert "\\u202egmi.zarr is not a zarr group" in err
    assert tree_snapshot(root) == before
