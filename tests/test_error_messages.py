"""Every user-facing error is one line naming the culprit and a remedy that works (issue 10, points 5 and 6).

Config files, split requests, unwritable outputs, missing paths and failed batch runs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from datagen import make_image_folder

from medmnist_lit.batch.spec import load_spec
from medmnist_lit.cli import main
from medmnist_lit.splits.groups import GroupFileError, read_group_csv
from medmnist_lit.splits.split import Split, SplitError
from medmnist_lit.splits.strategies import make_split
from medmnist_lit.utils.config_files import ConfigFileError, check_config_args, config_files
from medmnist_lit.utils.files import WriteError, write_json

NAMES = ("AbdomenCT", "BreastMRI", "CXR", "ChestCT", "Hand", "HeadCT")


def _error_line(capsys: pytest.CaptureFixture[str], command: str) -> str:
    """The single stderr line of a failed command (asserting there is exactly one)."""
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert err[0].startswith(f"medmnist-lit {command}: error: "), err[0]
    return err[0]


# ------------------------------------------------------------------------------------------- config files
CONFIGS = {
    "empty": ("", r"config file \S*c\.yaml is empty"),
    "comments": ("# nothing here yet\n\n   # indented comment\n", r"config file \S*c\.yaml is empty"),
    "syntax": (
        "data:\n  source: [a, b\n  seed: 1\n",
        r"config file \S*c\.yaml is not valid YAML at line 3, column 7: .*flow sequence that starts at line 2",
    ),
    "list": ("- fit\n- test\n", r"config file \S*c\.yaml holds a list at the top level, not a mapping"),
    "scalar": ("just words\n", r"config file \S*c\.yaml holds the str 'just words' at the top level"),
}


@pytest.mark.parametrize("command", ["prepare", "audit", "download", "fit", "cv", "test"])
@pytest.mark.parametrize("form", ["--config F", "--config=F", "-c F"])
@pytest.mark.parametrize("kind", list(CONFIGS))
def test_bad_config_file_is_one_line_naming_file(command, form, kind, tmp_path, capsys) -> None:
    text, message = CONFIGS[kind]
    path = tmp_path / "c.yaml"
    path.write_text(text)
    args = [a.replace("F", str(path)) for a in form.split()]
    assert main([command, *args]) == 2
    line = _error_line(capsys, command)
    assert re.search(message, line), line
    assert "<unicode string>" not in line and "Unexpected config" not in line


def test_missing_or_folder_config_names_the_option(tmp_path, capsys) -> None:
    assert main(["fit", "-c", str(tmp_path / "nope.yaml")]) == 2
    assert (
        "config file " in (line := _error_line(capsys, "fit")) and "does not exist; check the path given to -c" in line
    )
    assert main(["prepare", "--config", str(tmp_path)]) == 2
    assert "is a folder, not a file; check the path given to --config" in _error_line(capsys, "prepare")


def test_group_config_files_are_checked_and_good_or_inline_configs_pass(tmp_path, capsys) -> None:
    data = tmp_path / "data.yaml"
    data.write_text("# source: x\n")
    with pytest.raises(ConfigFileError, match=r"data\.yaml is empty.*source.*leave out --data"):
        check_config_args(["--data", str(data)])
    args = ["--config", "{trainer: {max_epochs: 1}}", "--optimizer", "Adam", "--data.source", "x.yaml", "--data=d.yml"]
    assert config_files(args) == [("--data", "d.yml")]  # inline YAML, class names and dotted keys are not files
    source = make_image_folder(tmp_path / "imgs", {"A": 3, "B": 3})
    data.write_text(f"# prepare settings\nsource: {source}\n")
    config = tmp_path / "c.yaml"
    config.write_text(f"# prepare settings\ndata:\n  source: {source}\n")
    for given in (["--config", str(config)], ["--config", f"{{data: {{source: {source}}}}}"]):
        assert main(["prepare", *given, "--workers", "1"]) == 0, given
        assert "6 images" in capsys.readouterr().out
    assert main(["audit", "--data", str(data)]) == 0  # a group config file (its __path__ is not an option)
    assert "6 images" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("spec", "base", "message"),
    [
        ("# todo\n", None, r"batch spec \S*spec\.yaml is empty: .*write a mapping such as"),
        ("name: x\nruns: [{name: a}\n", None, r"batch spec \S*spec\.yaml is not valid YAML at line 3, column 1"),
        ("name: x\nbase: base.yaml\n", "", r"spec\.yaml: base config \S*base\.yaml is empty"),
        ("name: x\nbase: base.yaml\n", "trainer: {max_epochs: 1\n", r"base config \S*base\.yaml is not valid YAML"),
        ("name: x\nbase: base.yaml\n", "[1, 2]\n", r"base config \S*base\.yaml holds a list at the top level"),
    ],
)
def test_batch_spec_and_base_config_get_the_same_checks(tmp_path, spec, base, message) -> None:
    (tmp_path / "spec.yaml").write_text(spec)
    if base is not None:
        (tmp_path / "base.yaml").write_text(base)
    with pytest.raises(ValueError, match=message) as info:
        load_spec(tmp_path / "spec.yaml", root=tmp_path)
    assert "\n" not in str(info.value) and "<unicode string>" not in str(info.value)


# ------------------------------------------------------------------------------------------ split errors
def _remedies(message: str) -> list[dict]:
    """Each remedy the message suggests, as make_split keyword changes (a ``between a and b`` gives both ends)."""
    advice = message.split("; ", 1)[1]
    out: list[dict] = []
    for chunk in re.split(r", or |, | or ", advice):
        if chunk.startswith("remove class"):
            out.append({"remove_class": True})
            continue
        options = re.findall(r"--data\.(\w+) (between \S+ and \S+|\S+)", chunk)
        assert options, f"not a remedy this test can try: {chunk!r}"
        variants: list[dict] = [{}]
        for key, value in options:
            ends = re.findall(r"[\d.]+", value) if value.startswith("between") else [value]
            variants = [{**v, key: end} for v in variants for end in ends]
        out += variants
    return out


def _apply(kwargs: dict, y: np.ndarray, change: dict, culprit: int | None) -> tuple[np.ndarray, dict]:
    changed = dict(kwargs)
    for key, value in change.items():
        if key == "remove_class":
            y = y[y != culprit]
        elif key == "stratify":
            changed[key] = {"false": False, "true": True}[value]
        elif key in ("folds", "repeats"):
            changed[key] = int(value)
        else:
            changed[key] = float(value)
    return y, changed


SPLIT_CASES = {
    # the case: a 2-image class, one of which goes to the test set, then 5-fold stratified k-fold
    "kfold, 2-image class": (np.r_[np.repeat(np.arange(4), 20), [4, 4]], {"strategy": "kfold"}, 4),
    "kfold, 4-image class": (np.r_[np.repeat(np.arange(4), 20), [4, 4, 4, 4]], {"strategy": "kfold"}, 4),
    "holdout, 1-image class": (np.r_[np.repeat(np.arange(4), 20), [4]], {}, 4),
    "holdout val, 2-image class": (np.r_[np.repeat(np.arange(4), 20), [4, 4]], {}, 4),
    "test part smaller than the classes": (np.repeat(np.arange(6), 5), {"test_fraction": 0.1}, None),
    "no fraction big enough for both sides": (np.repeat(np.arange(6), 2), {}, None),
    "val part too big": (np.repeat(np.arange(2), 10), {"val_fraction": 0.75}, None),
    "train_fraction too small": (np.repeat(np.arange(6), 10), {"train_fraction": 0.1}, None),
    "single class": (np.zeros(20, int), {"strategy": "kfold", "test_fraction": 0.0}, 0),
}


@pytest.mark.parametrize("case", list(SPLIT_CASES))
def test_split_errors_name_the_class_and_every_remedy_works(case: str) -> None:
    y, kwargs, culprit = SPLIT_CASES[case]
    with pytest.raises(SplitError) as info:
        make_split(y, class_names=NAMES[: int(y.max()) + 1], **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert not re.search(r"class \d", message), message
    if culprit is not None:  # the class at fault is named by its name
        assert f"class {NAMES[culprit]!r}" in message, message
    assert "folds <= 1" not in message and "--data.folds 1 " not in message
    remedies = _remedies(message)
    assert remedies, message
    for change in remedies:
        fixed_y, fixed = _apply(kwargs, y, change, culprit)
        split = make_split(fixed_y, **fixed)  # must not raise: the suggestion works
        assert split.n_folds >= 1, (case, change)


GROUPS_5, GROUPS_2 = np.arange(20) % 5, np.arange(20) % 2
UNSTRATIFIED_CASES = {
    "group_kfold, fewer groups than folds": (
        {"strategy": "group_kfold", "groups": GROUPS_5, "folds": 5},
        r"folds=5 is more than the 4 groups in dev; use --data.folds 4$",
    ),
    "group_kfold, test took the other group": (
        {"strategy": "group_kfold", "groups": GROUPS_2, "folds": 2},
        r"folds=2 is more than the 1 group in dev; use --data.test_fraction 0 \(no test set: all 2 groups in dev\)",
    ),
    "logo, test took the other group": (
        {"strategy": "logo", "groups": GROUPS_2},
        r"found 1; use --data.test_fraction 0 \(no test set: all 2 groups in dev\)",
    ),
    "loo, one dev sample": (
        {"strategy": "loo", "test_fraction": 0.5},
        r"fold 0 has no training samples \(dev holds 1\); use --data.test_fraction 0 \(no test set",
    ),
}


@pytest.mark.parametrize("case", list(UNSTRATIFIED_CASES))
def test_group_and_loo_errors_suggest_working_remedies(case: str) -> None:
    changes, message = UNSTRATIFIED_CASES[case]
    kwargs = {"stratify": False, "test_fraction": 0.2, **changes}
    y = np.array([0, 1]) if kwargs["strategy"] == "loo" else np.arange(20) % 2
    with pytest.raises(SplitError, match=message) as info:
        make_split(y, **kwargs)
    remedies = _remedies(str(info.value))
    assert remedies
    for change in remedies:
        fixed_y, fixed = _apply(kwargs, y, change, 0)
        assert make_split(fixed_y, **fixed).n_folds >= 2, (case, change)


def test_split_and_group_files_that_are_missing_name_the_option(tmp_path) -> None:
    with pytest.raises(SplitError, match=r"split file \S*nope\.npz does not exist; pass --data\.split_file"):
        Split.load(tmp_path / "nope.npz")
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(SplitError, match=r"empty\.npz is not a split file written by Split.save .*--data\.split_file"):
        Split.load(tmp_path / "empty.npz")
    with pytest.raises(GroupFileError, match=r"group file \S*nope\.csv does not exist; check .* --data\.groups"):
        read_group_csv(tmp_path / "nope.csv", np.array(["a"]))
    with pytest.raises(GroupFileError, match=r"group file \S* is a folder, not a file"):
        read_group_csv(tmp_path, np.array(["a"]))


# ------------------------------------------------------------------------------------------------ writes
def test_write_under_a_file_names_the_file(tmp_path) -> None:
    (tmp_path / "F").write_text("a file")
    for target in (tmp_path / "F" / "x.json", tmp_path / "F" / "deeper" / "x.json"):
        with pytest.raises(WriteError, match=rf"cannot write {re.escape(str(target))}: \S*F is a file, not a folder"):
            write_json(target, {})
    with pytest.raises(WriteError, match=r"cannot write \S+: \S+ is a folder; choose another path"):
        write_json(tmp_path, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["F"]  # no temporary left behind


def test_write_permission_problems_are_one_line(tmp_path, monkeypatch) -> None:
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(WriteError, match=r"cannot write \S*out\.json: (Permission denied|permission denied: .*)"):
        write_json(tmp_path / "out.json", {})


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write anywhere")
def test_write_into_a_read_only_folder(tmp_path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    with pytest.raises(WriteError, match=r"permission denied: \S*locked is not writable"):
        write_json(locked / "x.json", {})


def test_audit_output_under_a_file_fails_before_the_audit(tmp_path, capsys) -> None:
    source = make_image_folder(tmp_path / "imgs", {"A": 6, "B": 6})
    (tmp_path / "F").write_text("a file")
    code = main(["audit", "--data.source", str(source), "--output", str(tmp_path / "F" / "x.json")])
    assert code == 2
    line = _error_line(capsys, "audit")
    assert f"cannot write {tmp_path / 'F' / 'x.json'}: {tmp_path / 'F'} is a file, not a folder" in line
    assert "choose another --output" in line and "Errno" not in line


def test_batch_root_that_is_a_file(tmp_path, capsys) -> None:
    (tmp_path / "spec.yaml").write_text("name: s\nbase: {trainer: {max_epochs: 1}, data: {subset: 60}}\n")
    (tmp_path / "logs").write_text("a file")
    assert main(["batch", str(tmp_path / "spec.yaml"), "--root", str(tmp_path / "logs")]) == 2
    line = _error_line(capsys, "batch")
    assert f"cannot create folder {tmp_path / 'logs' / 's'}: {tmp_path / 'logs'} is a file, not a folder" in line
    assert "choose another --root" in line


# ---------------------------------------------------------------------------------------- failed batch runs
FAILING = """
name: failing
base:
  trainer: {max_epochs: 1, enable_progress_bar: false}
  data: {subset: 60, batch_size: 32}
seeds: [0]
runs:
  - {name: one, data.subset: 1}   # passes the parser, fails when the data module is built
  - {name: two, data.subset: 0}
"""


@pytest.mark.parametrize("workers", [1, 2])
def test_failed_batch_run_prints_one_line_and_records_the_traceback(tmp_path: Path, workers: int) -> None:
    (tmp_path / "spec.yaml").write_text(FAILING)
    command = [sys.executable, "-m", "medmnist_lit", "batch", "spec.yaml", "--root", "logs", "--workers", str(workers)]
    proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr
    console = proc.stdout + proc.stderr
    assert "Traceback" not in console and 'File "' not in console, console
    for name, subset in (("one", 1), ("two", 0)):
        record_path = Path("logs") / "failing" / f"{name}__seed0" / "record.json"
        lines = [line for line in console.splitlines() if f"{name}__seed0" in line and "FAILED" in line]
        assert len(lines) == 1, console
        assert lines[0].endswith(
            f"FAILED {name}__seed0: ValueError: data.subset must be at least 2 images, got {subset} "
            f"(traceback in {record_path})"
        ), lines[0]
        record = json.loads((tmp_path / record_path).read_text())
        assert record["traceback"].startswith("Traceback (most recent call last)")
        assert "datamodule.py" in record["traceback"] and record["traceback"].endswith(record["error"])
