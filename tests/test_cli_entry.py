"""The ``weakspot`` entry point: ``data inspect`` on an ImageFolder tree, and ``--debug`` on either side of the
subcommand."""

from __future__ import annotations

from pathlib import Path

import pytest

from weakspot.cli import build_parser, main
from weakspot.errors import WeakspotError


def _image_folder(root: Path, counts: dict[str, int], size: int = 8) -> Path:
    """A tiny ImageFolder tree: one sub-folder per class, ``counts[name]`` solid-colour PNGs in each."""
    from PIL import Image

    for shade, (name, count) in enumerate(counts.items()):
        folder = root / name
        folder.mkdir(parents=True)
        for index in range(count):
            Image.new("RGB", (size, size), (40 * shade, 10 * index, 128)).save(folder / f"{index}.png")
    return root


def _rows(output: str, first_cell: str) -> list[list[str]]:
    """The table rows whose first cell is ``first_cell``, as lists of cell texts."""
    rows = []
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("│┃|").split("│")]
        if len(cells) >= 3 and cells[0] == first_cell:
            rows.append(cells)
    return rows


def test_data_inspect_on_an_image_folder_lists_each_class_once(tmp_path, capsys):
    data = _image_folder(tmp_path / "folder", {"cats": 3, "dogs": 2})
    assert main(["data", "inspect", "--data", str(data), "--size", "8"]) == 0
    output = capsys.readouterr().out
    assert _rows(output, "class") == [["class", "cats", "3"], ["class", "dogs", "2"]], output


def test_data_inspect_still_lists_manifest_groups(tmp_path, capsys):
    data = _image_folder(tmp_path / "folder", {"cats": 2, "dogs": 2})
    manifest = tmp_path / "folder" / "labels.csv"
    manifest.write_text("file,animal,colour\ncats/0.png,cat,red\ncats/1.png,cat,blue\n"
                        "dogs/0.png,dog,red\ndogs/1.png,dog,red\n")
    assert main(["data", "inspect", "--data", str(data), "--label", "animal", "--groups", "colour",
                 "--size", "8"]) == 0
    output = capsys.readouterr().out
    assert _rows(output, "class") == [["class", "cat", "2"], ["class", "dog", "2"]], output
    assert _rows(output, "colour") == [["colour", "blue", "1"], ["colour", "red", "3"]], output


@pytest.mark.parametrize("argv", [
    ["--debug", "data", "inspect", "--data", "DATA"],
    ["data", "inspect", "--debug", "--data", "DATA"],
    ["data", "inspect", "--data", "DATA", "--debug"],
])
def test_debug_before_or_after_the_subcommand_shows_the_traceback(tmp_path, argv):
    missing = str(tmp_path / "missing")
    with pytest.raises(WeakspotError, match="no such file or directory"):
        main([missing if arg == "DATA" else arg for arg in argv])


def test_without_debug_the_error_is_one_line(tmp_path, capsys):
    assert main(["data", "inspect", "--data", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0


@pytest.mark.parametrize("command", ["demo", "data shortcut", "import", "train", "explain", "attack", "bench",
                                     "audit", "finetune", "check"])
def test_every_subcommand_takes_debug(command):
    parser = build_parser()
    words = command.split()
    subparser = parser
    for word in words:
        action = next(action for action in subparser._actions if action.choices and word in action.choices)
        subparser = action.choices[word]
    assert "--debug" in subparser._option_string_actions


@pytest.mark.parametrize("argv, debug", [
    (["attack", "--checkpoint", "model.pt", "--data", "folder", "--debug"], True),
    (["--debug", "attack", "--checkpoint", "model.pt", "--data", "folder"], True),
    (["attack", "--checkpoint", "model.pt", "--data", "folder"], False),
])
def test_attack_parses_debug_on_either_side(argv, debug):
    assert build_parser().parse_args(argv).debug is debug
