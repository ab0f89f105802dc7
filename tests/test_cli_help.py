"""Misspelled options get one short line with a suggestion; ``--help`` shows the project's options first."""

from __future__ import annotations

from pathlib import Path

import pytest

from medmnist_lit.cli import main


def _short_error(capsys: pytest.CaptureFixture[str], command: str) -> str:
    """The one stderr line of a failed command; stdout holds at most the start-up line (no usage)."""
    captured = capsys.readouterr()
    err = [line for line in captured.err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert err[0].startswith(f"medmnist-lit {command}: error: "), err[0]
    assert len(captured.out.splitlines()) <= 1, captured.out
    return err[0]


@pytest.mark.parametrize(
    ("args", "suggestion"),
    [
        (["--trainer.max_epoch", "3"], "--trainer.max_epochs"),  # a prefix is a typo, not an abbreviation
        (["--model.hiden_sizes", "[64]"], "--model.hidden_sizes"),
        (["--data.sorce", "x"], "--data.source"),
        (["--optimiser", "Adam"], "--optimizer"),
        (["--optimizer", "SGD", "--optimizer.momentun=0.9"], "--optimizer.momentum"),  # a class's own parameter
    ],
)
def test_a_misspelled_training_option_gets_a_suggestion(args: list[str], suggestion: str, capsys) -> None:
    assert main(["fit", *args]) == 2
    line = _short_error(capsys, "fit")
    assert f"did you mean {suggestion}?" in line, line
    typo = [a.partition("=")[0] for a in args if a.startswith("--")][-1]
    assert line.startswith(f"medmnist-lit fit: error: unknown option {typo}; "), line


def test_a_misspelled_key_in_a_config_file_names_the_file(tmp_path: Path, capsys) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("trainer:\n  max_epoch: 3\n")
    assert main(["fit", "--config", str(config)]) == 2
    line = _short_error(capsys, "fit")
    assert f"unknown key 'trainer.max_epoch' in {config}; did you mean trainer.max_epochs?" in line


@pytest.mark.parametrize(
    ("command", "args", "suggestion"),
    [
        ("prepare", ["--data.sorce", "x"], "--data.source"),
        ("audit", ["--data.sorce", "x"], "--data.source"),
        ("download", ["--rot", "x"], "--root"),
        ("test", ["--ckpt_pth", "x"], "--ckpt_path"),
    ],
)
def test_other_commands_suggest_too(command: str, args: list[str], suggestion: str, capsys) -> None:
    assert main([command, *args]) == 2
    assert f"did you mean {suggestion}?" in _short_error(capsys, command)


def test_help_lists_model_and_data_before_the_trainer(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--help"])
    assert exit_.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("usage: medmnist-lit fit ") and lines[1] == ""  # a one-line usage, not 70
    first = {
        option: next(i for i, line in enumerate(lines) if line.lstrip().startswith(option))
        for option in ("--model.hidden_sizes", "--data.source", "--optimizer ", "--trainer.max_epochs")
    }
    assert (
        first["--model.hidden_sizes"] < first["--data.source"] < first["--optimizer "] < first["--trainer.max_epochs"]
    )
    assert first["--model.hidden_sizes"] < 40  # on the first screen
