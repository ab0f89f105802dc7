"""The streaming npz reader: stored and deflated archives, block boundaries, multi-label labels, damaged files."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from datagen import make_npz

import medmnist_lit.data.arrays as arrays_module
from medmnist_lit.data.arrays import convert_array, read_npz
from medmnist_lit.data.cache import load_dataset
from medmnist_lit.data.layout import DataError
from medmnist_lit.data.npz_stream import NpzStream
from medmnist_lit.data.tasks import TaskKind
from medmnist_lit.utils.chunks import rows_per_chunk


def reference(path: Path, channels: int, image_size: int | None) -> np.ndarray:
    """What the whole-file reader gave: np.load, concatenate, convert."""
    with np.load(path, allow_pickle=False) as npz:
        images = np.concatenate([npz[f"{s}_images"] for s in ("train", "val", "test")])
    return convert_array(images, channels, image_size)


def npz_of(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> Path:
    """An npz written member by member (raw ``.npy`` bytes), for headers numpy's writers never produce."""
    with zipfile.ZipFile(path, "w", compression) as zf:
        for key, data in members.items():
            zf.writestr(f"{key}.npy", data)
    return path


def npy_bytes(array: np.ndarray, **kwargs: object) -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array(out, array, **kwargs)  # type: ignore[arg-type]
    return out.getvalue()


def valid_members(n: int = 4, size: int = 8) -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    members = {}
    for split in ("train", "val", "test"):
        members[f"{split}_images"] = npy_bytes(rng.integers(0, 256, (n, size, size), dtype=np.uint8))
        members[f"{split}_labels"] = npy_bytes((np.arange(n) % 2).astype(np.uint8).reshape(n, 1))
    return members


@pytest.mark.parametrize("compressed", [False, True], ids=["stored", "deflated"])
@pytest.mark.parametrize(("rgb", "channels", "image_size"), [(False, 1, None), (True, 1, 5), (True, 3, None)])
def test_streamed_images_equal_the_whole_file_reader(
    tmp_path: Path, compressed: bool, rgb: bool, channels: int, image_size: int | None
) -> None:
    path = make_npz(tmp_path / "x.npz", n_train=11, n_val=5, n_test=7, size=9, rgb=rgb, compressed=compressed)
    expected = reference(path, channels, image_size)
    row = 9 * 9 * (3 if rgb else 1)
    for chunk_bytes in (1, row, 3 * row + 1, 10**9):  # one row, exact rows, a remainder, everything at once
        data = read_npz(path, channels=channels, image_size=image_size, chunk_bytes=chunk_bytes)
        np.testing.assert_array_equal(data.images, expected)


def test_blocks_stay_within_the_byte_budget_and_cover_every_row(tmp_path: Path) -> None:
    path = make_npz(tmp_path / "x.npz", n_train=10, n_val=3, n_test=2, size=6, rgb=True)
    row = 6 * 6 * 3
    with NpzStream(path) as npz, np.load(path) as whole:
        starts, blocks = zip(*npz.chunks("train_images", 4 * row - 1), strict=True)
        assert starts == (0, 3, 6, 9) and [len(b) for b in blocks] == [3, 3, 3, 1]
        np.testing.assert_array_equal(np.concatenate(blocks), whole["train_images"])
    assert rows_per_chunk(row, 1) == 1  # a row larger than the budget is still read


def test_read_npz_converts_one_block_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_npz(tmp_path / "x.npz", n_train=40, n_val=8, n_test=8, size=8, rgb=True)
    seen: list[int] = []
    convert = arrays_module.convert_array

    def recording(images: np.ndarray, channels: int, image_size: int | None) -> np.ndarray:
        seen.append(images.nbytes)
        return convert(images, channels, image_size)

    monkeypatch.setattr(arrays_module, "convert_array", recording)
    data = read_npz(path, channels=3, chunk_bytes=1000, out_path=tmp_path / "images.npy")
    assert max(seen) <= 1000 and len(seen) > 3
    assert isinstance(data.images, np.memmap)
    np.testing.assert_array_equal(np.load(tmp_path / "images.npy"), reference(path, 3, None))


def test_multilabel_labels_make_a_multilabel_task_and_survive_the_cache(tmp_path: Path) -> None:
    path = make_npz(tmp_path / "chest.npz", multilabel=14)
    data = read_npz(path)
    assert data.task_kind is TaskKind.MULTILABEL and data.multilabel
    assert data.class_names == tuple(str(i) for i in range(14)) and data.labels.shape == (20, 14)
    with np.load(path) as npz:
        np.testing.assert_array_equal(
            data.labels, np.concatenate([npz[f"{s}_labels"] for s in ("train", "val", "test")])
        )
    first = load_dataset(path, cache_dir=tmp_path / "cache")
    second = load_dataset(path, cache_dir=tmp_path / "cache")
    assert second.meta["from_cache"] and second.task_kind is TaskKind.MULTILABEL
    np.testing.assert_array_equal(second.labels, first.labels)
    np.testing.assert_array_equal(second.labels, data.labels)
    single = load_dataset(make_npz(tmp_path / "blood.npz"), cache_dir=tmp_path / "cache")
    assert load_dataset(tmp_path / "blood.npz", cache_dir=tmp_path / "cache").task_kind is single.task_kind is None


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            {"val_images": npy_bytes(np.asfortranarray(np.zeros((4, 8, 8), np.uint8)))},
            r"key 'val_images' of .*x\.npz' is stored in Fortran .*numpy\.ascontiguousarray",
        ),
        (
            {"train_images": npy_bytes(np.zeros((4, 8, 8), np.uint8))[:-10]},
            r"key 'train_images' of .*x\.npz' is truncated: 246 bytes where its header promises 256",
        ),
        ({"test_images": b"\x93NUMPY\x01\x00garbage"}, r"cannot read key 'test_images' of .*x\.npz': its \.npy header"),
        ({"test_images": b"not numpy at all"}, r"cannot read key 'test_images' of .*x\.npz': its \.npy header"),
        (
            {"train_images": npy_bytes(np.zeros((4, 8, 8), np.uint8), version=(3, 0))},
            r"'train_images' of .*x\.npz' is a \.npy of format version 3\.0",
        ),
        (
            {"train_labels": npy_bytes(np.array([[0], [1], None, 1], dtype=object), allow_pickle=True)},
            r"key 'train_labels' of .*x\.npz' holds a Python object array.*allow_pickle=False",
        ),
        (
            {"train_labels": npy_bytes(np.array([[0, 1], [1, 1], [0, 0], [1, 0]], np.int64) * 3)},
            r"key 'train_labels' in .*x\.npz' holds values other than 0 and 1",
        ),
    ],
    ids=["fortran", "truncated", "bad-header", "no-magic", "version-3", "object-labels", "multilabel-values"],
)
def test_damaged_members_are_refused_by_name(tmp_path: Path, change: dict[str, bytes], match: str) -> None:
    path = npz_of(tmp_path / "x.npz", {**valid_members(), **change})
    with pytest.raises(DataError, match=match):
        read_npz(path)


def test_deflated_member_with_a_bad_crc_is_refused(tmp_path: Path) -> None:
    path = npz_of(tmp_path / "x.npz", valid_members(), zipfile.ZIP_DEFLATED)
    assert read_npz(path).images.shape == (12, 8, 8)
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("val_images.npy")
    crc_at = info.header_offset + 14  # the local header's CRC-32; the central directory's copy is the one checked
    central = raw.rindex(b"val_images.npy") - 46 + 16
    for at in (crc_at, central):
        raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"'val_images' of .*x\.npz' is damaged \(Bad CRC-32"):
        read_npz(path)


def test_a_single_npy_file_is_not_an_npz(tmp_path: Path) -> None:
    path = tmp_path / "x.npz"
    path.write_bytes(npy_bytes(np.zeros((2, 4, 4), np.uint8)))
    with pytest.raises(DataError, match=r"holds a single array, not a \.npz archive"):
        read_npz(path)


def test_medmnist_names_a_chest_file_multilabel_with_info_label_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import medmnist

    monkeypatch.setenv("MEDMNIST_ROOT", str(tmp_path / "root"))
    (tmp_path / "root").mkdir()
    make_npz(tmp_path / "root" / "chestmnist.npz", multilabel=14)
    data = load_dataset("medmnist:chestmnist", cache_dir=tmp_path / "cache")
    info = medmnist.INFO["chestmnist"]["label"]
    assert data.task_kind is TaskKind.MULTILABEL and data.class_names == tuple(info[str(i)] for i in range(14))
    assert data.labels.shape == (20, 14)
    make_npz(tmp_path / "root" / "octmnist.npz", num_classes=4)
    assert load_dataset("medmnist:octmnist", cache_dir=tmp_path / "cache").task_kind is TaskKind.MULTICLASS
    (tmp_path / "root" / "chestmnist.npz").unlink()
    make_npz(tmp_path / "root" / "chestmnist.npz", num_classes=14)  # one class per image: not the published file
    with pytest.raises(DataError, match=r"chestmnist\.npz holds one class per image .* 'multi-label, binary-class'"):
        load_dataset("medmnist:chestmnist", cache_dir=tmp_path / "cache")
