"""Task types through the DataModule: multi-label and ordinal data split and counted, options that cannot work for a
task refused, the task kept in checkpoints, and external test sets matched by task and label name."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from medmnist_lit.data.datamodule import MedMNISTDataModule
from medmnist_lit.data.imageset import ImageSet, match_classes
from medmnist_lit.data.layout import DataError
from medmnist_lit.data.provenance import restoring
from medmnist_lit.data.tasks import TaskKind
from medmnist_lit.splits.multilabel import label_text
from medmnist_lit.splits.strategies import make_split

LABELS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration")


def multilabel_set(n: int = 60, seed: int = 0, names: tuple[str, ...] = LABELS) -> ImageSet:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 8, 8), dtype=np.uint8)
    labels = (rng.random((n, len(names))) < [0.4, 0.1, 0.3, 0.2][: len(names)]).astype(np.uint8)
    ids = np.array([f"train/{i:06d}" for i in range(n)])
    return ImageSet(images, labels, names, ids, groups=np.arange(n) // 2, source="chest.npz",
                    task_kind=TaskKind.MULTILABEL)  # fmt: skip


def single_label_set(n: int = 60, kind: TaskKind | None = None, classes: int = 3) -> ImageSet:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (n, 8, 8), dtype=np.uint8)
    ids = np.array([f"train/{i:06d}" for i in range(n)])
    labels = np.arange(n, dtype=np.int64) % classes
    return ImageSet(images, labels, tuple(f"grade {i}" for i in range(classes)), ids, source="retina.npz",
                    task_kind=kind)  # fmt: skip


def around(data: ImageSet, **hparams: Any) -> MedMNISTDataModule:
    return MedMNISTDataModule.around(data, {"group_by": None, **hparams})


@pytest.mark.parametrize("strategy", ["holdout", "kfold", "loo", "group_kfold", "logo"])
def test_a_multilabel_dataset_goes_through_every_split_strategy(strategy: str) -> None:
    data = multilabel_set()
    dm = around(data, split=strategy, folds=3, test_fraction=0.5 if strategy in ("loo", "logo") else 0.2)
    assert dm.task.multilabel and dm.task.label_names == LABELS
    split = dm.split
    assert np.array_equal(np.union1d(split.test, split.dev), np.arange(len(data)))
    assert not np.isin(data.groups[dm.indices("train")], data.groups[dm.indices("val")]).any()  # type: ignore[index]
    train = dm.indices("train")
    assert np.array_equal(dm.class_counts("train"), data.labels[train].sum(0))  # positives per label
    assert dm.class_counts("dev").tolist() == data.labels[split.dev].sum(0).tolist()
    assert dm.state_dict()["task"] == TaskKind.MULTILABEL.value


def test_a_grouped_multilabel_split_logs_label_prevalences(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    _ = around(multilabel_set(), split="kfold", folds=3).split
    assert any("label balance of the grouped split" in r.getMessage() for r in caplog.records)


def test_a_subset_of_multilabel_data_is_drawn_by_iterative_stratification(monkeypatch) -> None:
    data = multilabel_set(200)
    drawn: list[np.ndarray] = []
    import medmnist_lit.data.datamodule as module

    monkeypatch.setattr(module, "load_dataset", lambda *a, **k: data)
    monkeypatch.setattr(module, "with_groups", lambda d, *a: (drawn.append(d.labels), d)[1])
    dm = MedMNISTDataModule(None, subset=50, group_by=None)
    assert len(dm.dataset) == 50 and dm.dataset.multilabel
    assert np.abs(drawn[0].mean(0) - data.labels.mean(0)).max() <= 0.03


def test_balanced_sampling_is_refused_for_a_multilabel_task(monkeypatch) -> None:
    with pytest.raises(ValueError, match=r"--data.sampling balanced .*chest.npz is a multi-label, binary-class task "
                                         r"\(4 labels.*use --data.sampling shuffle"):  # fmt: skip
        around(multilabel_set(), sampling="balanced")
    import medmnist_lit.data.datamodule as module

    monkeypatch.setattr(module, "load_dataset", lambda *a, **k: multilabel_set())
    with pytest.raises(ValueError, match=r"--data\.sampling balanced"):
        _ = MedMNISTDataModule(None, sampling="balanced").dataset  # refused on loading, before any split
    assert around(single_label_set(), sampling="balanced").task.kind is TaskKind.MULTICLASS  # single-label: fine


def test_an_ordinal_dataset_splits_as_multi_class() -> None:
    ordinal = around(single_label_set(kind=TaskKind.ORDINAL, classes=5), split="kfold", folds=3)
    plain = around(single_label_set(classes=5), split="kfold", folds=3)
    assert ordinal.task.kind is TaskKind.ORDINAL and ordinal.task.note is not None
    assert all(np.array_equal(a, b) for a, b in zip(ordinal.split.val, plain.split.val, strict=True))
    assert np.array_equal(ordinal.split.test, plain.split.test)
    assert ordinal.class_counts("dev").tolist() == np.bincount(ordinal.dataset.labels[ordinal.split.dev]).tolist()
    assert ordinal.state_dict()["task"] == "ordinal-regression"


def test_a_restored_datamodule_knows_the_task_without_its_data() -> None:
    record = around(multilabel_set(), split="kfold", folds=3).state_dict()
    with restoring(record):
        restored = MedMNISTDataModule("/nowhere/chest.npz", split="kfold", folds=3, group_by=None)
    assert restored.task.multilabel and restored.task.label_names == LABELS and restored.num_classes == 4
    ordinal = around(single_label_set(kind=TaskKind.ORDINAL), split="kfold", folds=3).state_dict()
    with restoring(ordinal):
        assert MedMNISTDataModule("/nowhere/retina.npz").task.kind is TaskKind.ORDINAL


def test_a_checkpoint_of_another_task_kind_is_refused() -> None:
    multilabel = multilabel_set()
    record = around(multilabel, split="kfold", folds=3).state_dict()
    # the same images and label names, read as single-label data: another task
    as_classes = replace(multilabel, labels=multilabel.labels.argmax(1).astype(np.int64), task_kind=None)
    dm = around(as_classes, split="kfold", folds=3)
    expected = "demo is a multi-class task but the checkpoint's model was trained for a multi-label, binary-class task"
    with pytest.raises(DataError, match=re.escape(f"{expected}; pass data of the checkpoint's task")):
        dm.load_state_dict(record)
    single = around(single_label_set(), split="kfold", folds=3)
    with pytest.raises(DataError, match="is a multi-label, binary-class task but the checkpoint's model was trained"):
        around(multilabel, split="kfold", folds=3).load_state_dict(single.state_dict())
    declared = around(single_label_set(kind=TaskKind.ORDINAL), split="kfold", folds=3)
    with pytest.raises(DataError, match=r"is a multi-class task but .* trained for a ordinal-regression task"):
        around(single_label_set(kind=TaskKind.MULTICLASS), split="kfold", folds=3).load_state_dict(
            declared.state_dict()
        )


def test_single_label_records_accept_undeclared_single_label_data() -> None:
    ordinal = around(single_label_set(kind=TaskKind.ORDINAL), split="kfold", folds=3)
    undeclared = around(single_label_set(), split="kfold", folds=3)
    undeclared.load_state_dict(ordinal.state_dict())  # a plain .npz of the same grades: the model's kind holds
    assert undeclared.task.kind is TaskKind.ORDINAL
    old = {k: v for k, v in undeclared.state_dict().items() if k != "task"}  # a record from before task types
    other = around(single_label_set(kind=TaskKind.ORDINAL), split="kfold", folds=3)
    other.load_state_dict(old)
    assert other.restored is not None and other.restored.task_kind is None
    with pytest.raises(DataError, match="is a multi-label, binary-class task but the checkpoint's model was trained"):
        around(multilabel_set(), split="kfold", folds=3).load_state_dict(old)


def test_an_external_multilabel_set_is_matched_by_label_name() -> None:
    reference = multilabel_set()
    order = [2, 0, 3, 1]
    other = multilabel_set(20, seed=5)
    shuffled = replace(other, labels=other.labels[:, order], class_names=tuple(LABELS[i] for i in order))
    matched = match_classes(shuffled, reference)
    assert matched.class_names == LABELS and matched.multilabel
    assert np.array_equal(matched.labels, other.labels)  # the columns back in the training data's order
    dm = MedMNISTDataModule.around(reference, {"group_by": None, "test_source": "x.npz"}, external=matched)
    assert dm.external.labels.shape == (20, 4)


def test_an_external_set_of_another_task_or_labels_is_refused() -> None:
    reference = multilabel_set()
    expected = "data.test_source retina.npz is a multi-class task but the training data is a multi-label, binary-class"
    with pytest.raises(DataError, match=re.escape(f"{expected} task; an external test set needs the same")):
        match_classes(single_label_set(classes=4), reference)
    with pytest.raises(DataError, match="is a multi-label, binary-class task but the training data is a multi-class"):
        match_classes(reference, single_label_set(classes=4))
    renamed = replace(reference, class_names=(*LABELS[:3], "Mass"))
    with pytest.raises(DataError, match=r"missing: \['Infiltration'\], unknown: \['Mass'\]"):
        match_classes(renamed, reference)
    # undeclared single-label data takes the training data's kind
    matched = match_classes(single_label_set(classes=5), single_label_set(kind=TaskKind.ORDINAL, classes=5))
    assert matched.task_kind is TaskKind.ORDINAL


def test_datamodule_split_equals_make_split_of_its_labels() -> None:
    data = multilabel_set()
    dm = around(data, split="kfold", folds=3, seed=4)
    direct = make_split(data.labels, strategy="kfold", folds=3, groups=data.groups, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(dm.split.val, direct.val, strict=True))


def test_the_audit_command_reports_and_draws_multilabel_data(tmp_path, monkeypatch, capsys) -> None:
    from medmnist_lit.cli import audit_command

    data = multilabel_set(80)
    images = np.array(data.images)
    images[40:60] = images[:20]  # 20 copies: with group_by none some land across the split
    labels = np.array(data.labels)
    labels[40:60] = labels[:20]
    labels[40] = 1 - labels[0]  # one copy with other labels: a conflict
    planted = replace(data, images=images, labels=labels, groups=None)
    import medmnist_lit.data.datamodule as module

    monkeypatch.setattr(module, "load_dataset", lambda *a, **k: planted)
    out, figure = tmp_path / "audit.json", tmp_path / "pairs.png"
    args = ["--data.source", "chest.npz", "--data.group_by", "none", "--data.split", "kfold", "--data.folds", "3"]
    assert audit_command([*args, "--output", str(out), "--figure", str(figure)]) == 0
    report = json.loads(out.read_text())
    assert report["label_conflicts"]["n_clusters"] == 1
    shown = report["label_conflicts"]["examples"][0]["labels"]
    assert shown == [label_text(labels[0], LABELS), label_text(labels[40], LABELS)]
    assert report["split"]["totals"]["val_in_train"]["exact"]["total"] > 0 and figure.stat().st_size > 0
    assert "carry different labels" in capsys.readouterr().out
