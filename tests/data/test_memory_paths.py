"""Memory that does not scale with the dataset: zero-copy image tensors, and statistics, hashes and thumbnails in
blocks of bounded bytes that equal their whole-array results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from datagen import make_npz

from medmnist_lit.data.datamodule import MedMNISTDataModule
from medmnist_lit.data.fold import fold_statistics
from medmnist_lit.data.loaders import PixelTransform, gather
from medmnist_lit.model.heads import MLP, LogisticRegression, StackedHead
from medmnist_lit.splits.groups import exact_duplicate_groups
from medmnist_lit.splits.near_duplicates import thumbnails


@pytest.fixture(scope="module")
def rgb_module(tmp_path_factory: pytest.TempPathFactory) -> MedMNISTDataModule:
    root = tmp_path_factory.mktemp("rgb")
    path = make_npz(root / "path.npz", n_train=30, n_val=6, n_test=6, size=6, rgb=True, num_classes=3)
    dm = MedMNISTDataModule(str(path), channels=3, cache_dir=str(root / "cache"), split="predefined", batch_size=8)
    dm.setup("fit")
    return dm


def test_rgb_tensor_is_a_view_of_the_memory_map_not_a_copy(rgb_module: MedMNISTDataModule) -> None:
    images = rgb_module.dataset.images
    assert isinstance(images, np.memmap)
    x, _ = rgb_module.tensors()
    assert x.shape == (len(images), 3, 6, 6) and not x.is_contiguous()
    assert x.data_ptr() == images.ctypes.data  # the cache's pages, shared, never copied
    np.testing.assert_array_equal(x.numpy(), np.asarray(images).transpose(0, 3, 1, 2))


def test_heads_give_equal_outputs_on_batches_of_the_view(rgb_module: MedMNISTDataModule) -> None:
    x, _ = rgb_module.tensors()
    contiguous = x.contiguous()  # what tensors() used to return
    index = torch.tensor([5, 0, 17, 3, 41, 9])
    transform = PixelTransform.standardize(torch.tensor([0.4, 0.5, 0.6]), torch.tensor([0.2, 0.25, 0.3]))
    view_batch, copy_batch = transform(gather(x, index)), transform(gather(contiguous, index))
    assert torch.equal(view_batch, copy_batch)
    torch.manual_seed(0)
    features = 3 * 6 * 6
    heads = [LogisticRegression(features, 3), MLP(features, 3, (7,)), StackedHead([MLP(features, 3, (5,))] * 2)]
    for head in heads:
        head.eval()
        torch.testing.assert_close(head(view_batch), head(copy_batch), rtol=0, atol=0)
    stacked = PixelTransform.stack([transform, PixelTransform.standardize(torch.zeros(3), torch.ones(3))])
    torch.testing.assert_close(heads[2](stacked(gather(x, index))), heads[2](stacked(gather(contiguous, index))))


@pytest.mark.parametrize("shape", [(50, 7, 5), (50, 7, 5, 3)])
def test_fold_statistics_in_blocks_equal_the_whole_array(shape: tuple[int, ...]) -> None:
    images = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    train = np.sort(np.random.default_rng(2).choice(50, 31, replace=False))
    channels = shape[3] if len(shape) == 4 else 1
    whole = fold_statistics(images, train, channels, chunk_bytes=10**9)
    pixels = images[train].reshape(-1, channels) / 255
    np.testing.assert_allclose(whole.mean, pixels.mean(0), rtol=1e-6)
    np.testing.assert_allclose(whole.std, pixels.std(0), rtol=1e-6)
    for chunk_bytes in (1, 7 * 5 * channels * 9 * 4 + 3):  # one image, four and a bit
        assert fold_statistics(images, train, channels, chunk_bytes=chunk_bytes) == whole


def test_exact_duplicates_and_thumbnails_do_not_depend_on_the_block_size() -> None:
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (40, 9, 9, 3), dtype=np.uint8)
    images[[7, 20, 33]] = images[2]
    images[39] = images[11]
    reference = exact_duplicate_groups(images, chunk_bytes=10**9)
    assert reference[7] == reference[20] == reference[33] == reference[2] and reference[39] == reference[11]
    thumbs = thumbnails(images, grid=4, chunk_bytes=10**9)
    for chunk_bytes in (1, 9 * 9 * 3 * 5 + 1):
        np.testing.assert_array_equal(exact_duplicate_groups(images, chunk_bytes=chunk_bytes), reference)
        np.testing.assert_array_equal(thumbnails(images, grid=4, chunk_bytes=chunk_bytes), thumbs)


def test_thumbnail_blocks_stay_within_the_byte_budget(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    images = np.zeros((64, 32, 32, 3), np.uint8)
    seen: list[int] = []

    class Recording(np.ndarray):
        def __getitem__(self, key: object) -> np.ndarray:
            block = np.asarray(super().__getitem__(key))
            seen.append(block.nbytes)
            return block

    thumbnails(images.view(Recording), grid=4, chunk=512, chunk_bytes=32 * 32 * 3 * 4 * 10)
    assert seen and max(seen) <= 32 * 32 * 3 * 10  # 10 images: their float32 copy fits the budget
