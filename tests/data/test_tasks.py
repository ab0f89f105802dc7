"""Task types from MedMNIST's INFO entries: kind, outputs, loss, scores and label checks."""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import pytest
import torch

from medmnist_lit.data.layout import DataError
from medmnist_lit.data.tasks import Task, TaskKind

EXPECTED = {  # name: (kind, outputs), as MedMNIST v2 / MedMNIST+ describe the twelve 2D datasets
    "pathmnist": (TaskKind.MULTICLASS, 9),
    "chestmnist": (TaskKind.MULTILABEL, 14),
    "dermamnist": (TaskKind.MULTICLASS, 7),
    "octmnist": (TaskKind.MULTICLASS, 4),
    "pneumoniamnist": (TaskKind.BINARY, 2),
    "retinamnist": (TaskKind.ORDINAL, 5),
    "breastmnist": (TaskKind.BINARY, 2),
    "bloodmnist": (TaskKind.MULTICLASS, 8),
    "tissuemnist": (TaskKind.MULTICLASS, 8),
    "organamnist": (TaskKind.MULTICLASS, 11),
    "organcmnist": (TaskKind.MULTICLASS, 11),
    "organsmnist": (TaskKind.MULTICLASS, 11),
}


@pytest.fixture(scope="module")
def info(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    # medmnist.info makes ~/.medmnist when first imported: let that happen in a temporary home
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(tmp_path_factory.mktemp("home")))
        entries = importlib.import_module("medmnist.info").INFO
    return {name: e for name, e in entries.items() if not e["python_class"].endswith("3D")}


def test_the_twelve_2d_datasets(info: dict[str, dict[str, Any]]) -> None:
    assert sorted(info) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_task_of_each_2d_dataset(info: dict[str, dict[str, Any]], name: str) -> None:
    entry = info[name]
    task = Task.from_info(entry)
    kind, outputs = EXPECTED[name]
    assert (task.kind, task.num_outputs) == (kind, outputs)
    assert task.kind.value == entry["task"]
    assert task.label_names == tuple(entry["label"][str(i)] for i in range(outputs))
    multilabel = kind is TaskKind.MULTILABEL
    assert task.multilabel is multilabel
    assert task.loss_name == ("bce_with_logits" if multilabel else "cross_entropy")
    assert task.activation == ("sigmoid" if multilabel else "softmax")
    assert task.label_shape == ((14,) if multilabel else ())
    assert (task.note is not None) is (kind is TaskKind.ORDINAL)

    # MedMNIST's layout: (N, 1) uint8 class indices, or (N, 14) uint8 0/1 labels
    rng = np.random.default_rng(0)
    stored = rng.integers(0, 2, (6, 14)) if multilabel else rng.integers(0, outputs, (6, 1))
    labels = task.check_labels(stored.astype(np.uint8), f"{name}.npz: train_labels")
    assert labels.shape == (6, *task.label_shape)
    logits = torch.randn(6, outputs)
    scores = task.scores(logits)
    assert scores.shape == (6, outputs)
    assert torch.allclose(scores.sum(1), torch.ones(6)) is not multilabel
    loss = task.loss(logits, torch.from_numpy(labels.astype(np.float32) if multilabel else labels))
    expected = (
        torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.from_numpy(labels).float())
        if multilabel
        else torch.nn.functional.cross_entropy(logits, torch.from_numpy(labels))
    )
    assert torch.allclose(loss, expected)


def test_wrong_label_shapes_are_refused_in_one_line() -> None:
    chest = Task(TaskKind.MULTILABEL, tuple("abcd"))
    with pytest.raises(DataError, match=r"^chest.npz: train_labels has shape \(3, 1\), but a multi-label task with 4"):
        chest.check_labels(np.zeros((3, 1), np.uint8), "chest.npz: train_labels")
    with pytest.raises(DataError, match="values other than 0 and 1"):
        chest.check_labels(np.full((3, 4), 2, np.uint8))
    blood = Task(TaskKind.MULTICLASS, tuple("abc"))
    with pytest.raises(DataError, match=r"shape \(3, 4\), but a multi-class task needs \(N,\) or \(N, 1\)"):
        blood.check_labels(np.zeros((3, 4), np.uint8))
    with pytest.raises(DataError, match=r"holds class 3, outside 0\.\.2 of the 3 classes"):
        blood.check_labels(np.array([0, 3]))
    with pytest.raises(DataError, match="non-integer"):
        blood.check_labels(np.array([0.5, 1.0]))
    for problem in (
        lambda: Task(TaskKind.BINARY, tuple("abc")),
        lambda: Task.from_info({"task": "regression", "label": {"0": "a", "1": "b"}}),
    ):
        with pytest.raises(ValueError):
            problem()


def test_single_label_sources_and_parsing() -> None:
    assert Task.single_label(["normal", "pneumonia"]).kind is TaskKind.BINARY
    assert Task.single_label(list("abcdef")).kind is TaskKind.MULTICLASS
    assert TaskKind.parse("ordinal") is TaskKind.ORDINAL is TaskKind.parse("ordinal-regression")
    with pytest.raises(ValueError, match=r"label keys must be 0\.\.1"):
        Task.from_info({"task": "binary-class", "label": {"0": "a", "2": "b"}})
    with pytest.raises(ValueError, match="has no 'label'"):
        Task.from_info({"task": "binary-class"})


def test_multilabel_loss_options() -> None:
    task = Task(TaskKind.MULTILABEL, ("a", "b"))
    logits, target = torch.zeros(4, 2), torch.tensor([[1, 0]] * 4)
    pos_weight = torch.tensor([3.0, 1.0])
    assert torch.allclose(
        task.loss(logits, target, weight=pos_weight),
        torch.nn.functional.binary_cross_entropy_with_logits(logits, target.float(), pos_weight=pos_weight),
    )
    smoothed = torch.tensor([[0.95, 0.05]] * 4)  # label smoothing 0.1 moves targets 0.05 towards 0.5
    assert torch.allclose(
        task.loss(logits + 1, target, label_smoothing=0.1),
        torch.nn.functional.binary_cross_entropy_with_logits(logits + 1, smoothed),
    )
