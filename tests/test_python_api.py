"""The README's "From Python" examples run as written (on a tiny zip made here instead of Medical MNIST)."""

from __future__ import annotations

import re
from pathlib import Path

import lightning as L
import pytest
from datagen import make_image_folder, make_zip

from medmnist_lit import Classifier, MedMNISTDataModule

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    section = README.read_text(encoding="utf-8").split("## From Python", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


@pytest.fixture
def tiny_zip(tmp_path: Path) -> Path:
    folder = make_image_folder(tmp_path / "tiny", {"AbdomenCT": 20, "CXR": 20, "Hand": 20}, size=16)
    return make_zip(folder, tmp_path / "tiny.zip")


@pytest.mark.parametrize("block", [0, 1], ids=["run_job", "lightning"])
def test_readme_examples_run_as_written(block: int, tiny_zip: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    code = python_blocks()[block]
    assert 'S = "data/medical_mnist.zip"' in code
    monkeypatch.chdir(tmp_path)
    exec(compile(code.replace('"data/medical_mnist.zip"', repr(str(tiny_zip))), "README.md", "exec"), {})
    printed = capsys.readouterr().out.split()
    accuracies = [float(word) for word in printed[-3 if block == 0 else -1 :]]
    assert all(0.0 <= a <= 1.0 for a in accuracies)
    if block == 0:  # SGD with momentum on standardised pixels learns even these 36 training images
        assert accuracies[0] > 0.5 and accuracies[1] > 0.5


def test_classifier_takes_its_shapes_from_the_datamodule(tiny_zip: Path, tmp_path: Path) -> None:
    datamodule = MedMNISTDataModule(source=str(tiny_zip), batch_size=16)
    model = Classifier()
    trainer = L.Trainer(max_epochs=1, default_root_dir=tmp_path, enable_progress_bar=False, logger=False)
    trainer.fit(model, datamodule)
    assert model.hparams.num_classes == 3 and tuple(model.hparams.input_shape) == (1, 16, 16)
    assert model.hparams.class_names == ["AbdomenCT", "CXR", "Hand"]
    restored = Classifier.load_from_checkpoint(trainer.checkpoint_callback.best_model_path)
    assert restored.hparams.num_classes == 3 and tuple(restored.hparams.input_shape) == (1, 16, 16)
    with pytest.raises(Exception, match="built for 10 classes"):
        L.Trainer(max_epochs=1, logger=False, enable_progress_bar=False).fit(
            Classifier(num_classes=10, input_shape=(1, 8, 8)), datamodule
        )
    with pytest.raises(RuntimeError, match="no shapes yet"):
        Classifier()(datamodule.tensors()[0][:2].float())
