"""A checkpoint is self-contained: predicting new images needs nothing else, and it never scores other data."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from datagen import make_image_folder, make_npz, make_zip, write_image

from medmnist_lit.cli import main
from medmnist_lit.data.datamodule import MedMNISTDataModule
from medmnist_lit.utils.checkpoints import load_checkpoint

QUIET = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A standardised model fitted on ``data`` given as a relative path; returns (its working directory, last.ckpt)."""
    cwd = tmp_path_factory.mktemp("self_contained")
    make_image_folder(cwd / "data", {"A": 16, "B": 16, "C": 16}, size=8)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        mp.setenv("MEDMNIST_LIT_CACHE", str(cwd / "cache"))
        args = ["--data.source", "data", "--data.standardize", "true", "--data.batch_size", "16"]
        logger = ["--trainer.logger.init_args.name", "sc", "--trainer.enable_progress_bar", "false"]
        assert main(["fit", *args, *logger, "--trainer.max_epochs", "2", "--optimizer.lr", "0.5"]) == 0
    return cwd, cwd / "lightning_logs" / "sc" / "version_0" / "checkpoints" / "last.ckpt"


@pytest.fixture
def moved(trained: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """The training data renamed to ``moved`` for one test (renamed back after it); returns (moved, last.ckpt)."""
    cwd, ckpt = trained
    monkeypatch.setenv("MEDMNIST_LIT_CACHE", str(cwd / "cache"))
    (cwd / "data").rename(cwd / "moved")
    try:
        yield cwd / "moved", ckpt
    finally:
        (cwd / "moved").rename(cwd / "data")


def _predict(ckpt: Path, source: Path, out: Path) -> list[str]:
    args = ["--predict.source", str(source), "--predict.output", str(out)]
    assert main(["predict", "--ckpt_path", str(ckpt), *args]) == 0
    return out.read_text().splitlines()


def test_the_checkpoint_records_its_data_weights_only(trained: tuple[Path, Path]) -> None:
    cwd, ckpt = trained
    record = load_checkpoint(ckpt)["MedMNISTDataModule"]  # a weights-only load
    assert record["class_names"] == ["A", "B", "C"] and record["input_shape"] == [1, 8, 8]
    assert record["source"] == str(cwd / "data")  # absolute, though "data" was typed
    assert len(record["mean"]) == len(record["std"]) == 1 and 0 < record["std"][0] < 1
    assert isinstance(record["fingerprint"], str) and len(record["split"]) == 64 and record["fold"] == 0
    assert load_checkpoint(ckpt)["datamodule_hyper_parameters"]["source"] == str(cwd / "data")
    restored = MedMNISTDataModule.load_from_checkpoint(ckpt)
    assert restored.class_names == ["A", "B", "C"] and restored.input_shape == (1, 8, 8)
    assert "dataset" not in restored.__dict__  # answered from the checkpoint, without loading the data


def test_predict_needs_only_the_checkpoint(trained: tuple[Path, Path], tmp_path: Path, monkeypatch) -> None:
    cwd, ckpt = trained
    monkeypatch.setenv("MEDMNIST_LIT_CACHE", str(cwd / "cache"))
    for i in range(4):
        write_image(tmp_path / "new" / f"scan_{i}.png", size=8, seed=i)
    monkeypatch.chdir(cwd)
    before = _predict(ckpt, tmp_path / "new", tmp_path / "before.csv")
    (cwd / "data").rename(cwd / "gone")
    try:
        monkeypatch.chdir(tmp_path)  # another working directory as well
        after = _predict(ckpt, tmp_path / "new", tmp_path / "after.csv")
        # standardised with the statistics stored in the checkpoint: the very same probabilities
        assert after == before and len(after) == 5
        assert after[0].split(",") == ["id", "label", "predicted", "p_A", "p_B", "p_C"]
        tree = make_image_folder(tmp_path / "tree", {"B": 2, "C": 3}, size=8, seed=9)
        rows = _predict(ckpt, tree, tmp_path / "tree.csv")
        assert [row.split(",")[1] for row in rows[1:]] == ["B", "B", "C", "C", "C"]  # labels kept from the tree
        assert len(_predict(ckpt, make_zip(tree, tmp_path / "tree.zip"), tmp_path / "zip.csv")) == 6
        npz = make_npz(tmp_path / "x.npz", n_train=3, n_val=0, n_test=0, num_classes=3, size=8)
        assert len(_predict(ckpt, npz, tmp_path / "npz.csv")) == 4
    finally:
        (cwd / "gone").rename(cwd / "data")


def test_commands_needing_the_moved_data_say_where_it_was(moved: tuple[Path, Path], tmp_path, monkeypatch, capsys):
    source, ckpt = moved
    monkeypatch.chdir(tmp_path)
    for command in (["test"], ["predict", "--predict.output", str(tmp_path / "p.csv")]):
        assert main([*command, "--ckpt_path", str(ckpt), *QUIET]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err
        assert f"the checkpoint's data source {source.parent / 'data'} no longer exists" in err[0]
        assert "--data.source NEW_PATH" in err[0] and "--predict.source IMAGES" in err[0]
    # the same files, moved: scored as before, with no warning (same names, sizes and modification times)
    assert main(["test", "--ckpt_path", str(ckpt), "--data.source", str(source), *QUIET]) == 0
    out = capsys.readouterr()
    assert "Accuracy of the model on the test images" in out.out and "WARNING" not in out.out + out.err
    # other split options would put training images in the test split: refused in one line
    assert main(["test", "--ckpt_path", str(ckpt), "--data.source", str(source), "--data.seed", "7", *QUIET]) == 2
    assert "is not the one the checkpoint was trained on" in capsys.readouterr().err


def test_a_copy_with_new_modification_times_is_scored_with_a_warning(moved, tmp_path, monkeypatch, capsys) -> None:
    source, ckpt = moved
    copy = shutil.copytree(source, tmp_path / "copy", copy_function=shutil.copy)  # copy: new mtimes
    monkeypatch.chdir(tmp_path)
    assert main(["test", "--ckpt_path", str(ckpt), "--data.source", str(copy), *QUIET]) == 0
    out = capsys.readouterr()
    text = out.out + out.err
    assert text.count("differs from the source the checkpoint was trained on") == 1
    assert "Accuracy of the model on the test images" in text


def test_relative_source_works_from_another_directory_and_old_checkpoints_still_load(
    trained: tuple[Path, Path], tmp_path: Path, monkeypatch, capsys
) -> None:
    cwd, ckpt = trained
    monkeypatch.setenv("MEDMNIST_LIT_CACHE", str(cwd / "cache"))
    monkeypatch.chdir(tmp_path)
    assert main(["test", "--ckpt_path", str(ckpt), *QUIET]) == 0
    score = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Accuracy of the model")]
    # a checkpoint of an earlier version: no data record, no history, the source as typed
    old = load_checkpoint(ckpt)
    del old["MedMNISTDataModule"], old["medmnist_lit_history"]
    old["datamodule_hyper_parameters"]["source"] = "data"
    torch.save(old, tmp_path / "old.ckpt")
    monkeypatch.chdir(cwd)
    assert main(["test", "--ckpt_path", str(tmp_path / "old.ckpt"), *QUIET]) == 0
    assert [line for line in capsys.readouterr().out.splitlines() if line.startswith("Accuracy of the")] == score
