"""The DataModule and its in-memory loaders: batch regimes, sampling, standardisation, folds as values."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest
import torch
from datagen import make_image_folder

from medmnist_lit.data.datamodule import MedMNISTDataModule
from medmnist_lit.data.loaders import EpochSampler


def _steps(loader) -> list[tuple[torch.Tensor, ...]]:
    return list(loader)


def test_minibatch_full_batch_and_online_regimes() -> None:
    for batch_size, expected in ((64, 17), ("full", 1), (1, 1077)):
        dm = MedMNISTDataModule(batch_size=batch_size)
        loader = dm.train_dataloader()
        steps = _steps(loader)
        assert len(steps) == len(loader) == loader.num_batches == expected, batch_size  # one batch per step
        assert sum(len(y) for _, y in steps) == 1077
        if batch_size == "full":
            assert len(steps[0][1]) == 1077


def test_shuffle_visits_every_training_sample_once_per_epoch_in_a_new_order() -> None:
    dm = MedMNISTDataModule(batch_size=100)
    loader = dm.train_dataloader()
    first = torch.cat([y for _, y in _steps(loader)])
    loader.sampler.set_epoch(1)
    second = torch.cat([y for _, y in _steps(loader)])
    assert len(first) == len(second) == 1077
    assert not torch.equal(first, second)  # a new order ...
    assert torch.equal(first.sort().values, second.sort().values)  # ... of the same samples
    train = torch.as_tensor(dm.indices("train"))
    assert torch.equal(first.sort().values, dm.tensors()[1][train].sort().values)
    assert [len(y) for _, y in loader] == [100] * 10 + [77]


def test_epoch_order_depends_only_on_seed_and_epoch() -> None:
    index = torch.arange(50)
    a, b = EpochSampler(index, seed=3), EpochSampler(index, seed=3)
    b.set_epoch(4)
    b.order()
    a.set_epoch(4)
    assert torch.equal(a.order(), b.order())
    c = EpochSampler(index, seed=4)
    c.set_epoch(4)
    assert not torch.equal(a.order(), c.order())


def test_sampling_with_replacement_and_class_balanced() -> None:
    labels = torch.tensor([0] * 90 + [1] * 10)
    index = torch.arange(100)
    drawn = EpochSampler(index, labels, "replacement", seed=0).order()
    assert len(drawn) == 100 and len(torch.unique(drawn)) < 100  # with replacement: repeats
    counts = torch.zeros(2)
    for epoch in range(20):
        sampler = EpochSampler(index, labels, "balanced", seed=0)
        sampler.set_epoch(epoch)
        counts += torch.bincount(labels[sampler.order()], minlength=2)
    assert counts[1] / counts.sum() == pytest.approx(0.5, abs=0.05)  # the 10% class drawn half the time


def test_shards_split_an_epoch_between_processes() -> None:
    index = torch.arange(11)
    shards = [EpochSampler(index, seed=0, rank=r, world_size=2) for r in range(2)]
    orders = [s.order() for s in shards]
    assert len(orders[0]) == len(orders[1]) == 6  # padded to equal length
    assert set(torch.cat(orders).tolist()) == set(range(11))


def test_standardisation_uses_the_training_part_only() -> None:
    dm = MedMNISTDataModule(standardize=True)
    images, _ = dm.tensors()
    train = torch.as_tensor(dm.indices("train"))
    x = dm.transform(images[train])
    assert x.mean().item() == pytest.approx(0.0, abs=1e-4) and x.std().item() == pytest.approx(1.0, abs=1e-3)
    test = torch.as_tensor(dm.indices("test"))
    pixels = images[test].float() / 255
    expected = (pixels - (images[train].float() / 255).mean()) / (images[train].float() / 255).std()
    torch.testing.assert_close(dm.transform(images[test]), expected, atol=1e-3, rtol=1e-3)


def test_folds_and_refit_parts() -> None:
    dm = MedMNISTDataModule(split="kfold", folds=4, fold=2)
    split = dm.split
    assert np.array_equal(dm.indices("val"), split.val[2]) and dm.selected_fold.number == 2
    assert len(np.intersect1d(dm.indices("train"), dm.indices("val"))) == 0
    refit = dm.with_fold(dm.refit_fold())
    assert np.array_equal(refit.indices("train"), split.dev) and len(refit.indices("val")) == 0
    assert refit.val_dataloader() == [] and refit.selected_fold.name == "refit"
    with pytest.raises(ValueError, match="fold=7 is out of range"):
        _ = MedMNISTDataModule(split="kfold", folds=4, fold=7).split


def test_a_fold_is_a_value_the_datamodule_serves_without_changing() -> None:
    dm = MedMNISTDataModule(split="kfold", folds=3, standardize=True)
    fold = dm.make_fold(1, seed=7)
    served = dm.with_fold(fold)
    assert served is not dm and served.selected_fold is fold and served.hparams["fold"] == 1
    assert dm.selected_fold.number == 0 and dm.hparams["fold"] == 0  # the original still serves its own fold
    assert served.split is dm.split and served.dataset is dm.dataset  # shared, not recomputed
    y = torch.cat([y for _, y in served.train_dataloader()])
    assert len(y) == len(fold.train) and served.transform is fold.transform is not dm.transform
    again = pickle.loads(pickle.dumps(fold))  # a value: it travels to another process
    assert again.number == 1 and again.seed == 7 and np.array_equal(again.val, fold.val)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fold.number = 2  # type: ignore[misc]


def test_cross_validation_stream_masks_each_folds_validation_samples() -> None:
    dm = MedMNISTDataModule(split="kfold", folds=3, batch_size=32)
    folds = [dm.make_fold(k, stream=True) for k in range(3)]
    loader = dm.train_loader(folds[1])
    order = loader.sampler.order()
    assert torch.equal(order.sort().values, torch.as_tensor(dm.split.dev))  # the shared development-set stream
    kept = order[loader.members[order]]
    assert sorted(kept.tolist()) == folds[1].train.tolist()  # every training sample once, no validation one
    batches = _steps(loader)
    assert sum(len(y) for _, y in batches) == len(kept)
    # one batch per stream batch, whatever the fold keeps of it: every fold takes the same steps
    assert len(batches) == len(loader) == -(-len(dm.split.dev) // folds[1].stream_batch_size)
    masked = dm.stream_loader(folds)
    _, y, keep = next(iter(masked))
    assert keep.shape == (3, len(y)) and bool((keep.sum(0) == 2).all())  # each sample validates exactly one fold


def test_class_balanced_weights_and_counts(tmp_path) -> None:
    make_image_folder(tmp_path / "d", {"A": 30, "B": 10})
    dm = MedMNISTDataModule(str(tmp_path / "d"), test_fraction=0.25, val_fraction=0.25)
    counts = dm.class_counts("train")
    assert counts.tolist() == [15, 5]
    assert dm.class_names == ["A", "B"] and dm.input_shape == (1, 8, 8) and dm.num_classes == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"batch_size": 0}, "batch_size"), ({"eval_batch_size": 0}, "eval_batch_size"), ({"subset": 1}, "subset")],
)
def test_bad_options_name_the_option(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MedMNISTDataModule(**kwargs)
