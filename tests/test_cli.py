import pytest

from weakspot.cli import SUBCOMMANDS, main


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    output = capsys.readouterr().out
    expected = ["demo", "data", "import", "train", "explain", "attack", "bench", "audit", "finetune", "check"]
    for name in expected:
        assert name in output
    assert [name for name, _, _ in SUBCOMMANDS] == expected


def test_data_inspect_counts_classes_and_groups(utkface_dir, capsys):
    assert main(["data", "inspect", "--data", str(utkface_dir), "--label", "gender", "--groups", "race",
                 "--size", "16", "--max-images", "50"]) == 0
    output = capsys.readouterr().out
    assert "female" in output and "race" in output and "50 images" in output


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["data", "inspect", "--data", str(tmp_path / "missing")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "missing: no such file or directory" in error
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "inspect", "--data", "x", "--size", "-3"])
    assert exit_info.value.code == 2


def test_piped_output_is_not_cut_at_80_columns(monkeypatch):
    from weakspot.terminal import PIPED_WIDTH, make_console

    monkeypatch.delenv("COLUMNS", raising=False)
    assert make_console().width == PIPED_WIDTH  # pytest captures stdout: not a terminal
    monkeypatch.setenv("COLUMNS", "100")
    assert make_console().width == 100


def test_command_modules_do_not_import_the_dispatcher():
    """weakspot.cli imports the command modules; they take their shared flags from weakspot.arguments, which
    imports none of them, so there is no cycle."""
    import ast
    from pathlib import Path

    package = Path(__file__).resolve().parent.parent / "weakspot"

    def imported_modules(path: Path) -> set[str]:
        tree = ast.parse(path.read_text())
        return {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module} | \
               {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}

    for path in package.rglob("*.py"):
        if path.name != "cli.py" or path.parent != package:
            assert "weakspot.cli" not in imported_modules(path), path
    assert not {name for name in imported_modules(package / "arguments.py") if name.endswith("cli")}


@pytest.mark.parametrize("flag, text", [("--cue-gate", "1.5"), ("--cue-gate", "none"), ("--pool-check", "0"),
                                        ("--pool-check", "nan"), ("--pool-check", "-1"), ("--rounds", "0")])
def test_out_of_range_loop_flags_exit_2_naming_the_flag(flag, text, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["finetune", "--method", "adversarial", flag, text])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert flag in error and "'off'" in error
