"""Readers: folder, zip, npz and digits sources, conversions, and every malformed-input error."""

from __future__ import annotations

import io
import logging
import zipfile
from pathlib import Path

import numpy as np
import pytest
from datagen import encode, make_image_folder, make_npz, make_zip, synthetic_pixels, write_image
from PIL import Image

from medmnist_lit.data.arrays import read_digits, read_npz, to_luma
from medmnist_lit.data.imageset import PREDEFINED_CODES
from medmnist_lit.data.layout import DataError, ZipNode, _any_tree, _plain_tree, zip_tree
from medmnist_lit.data.listing import list_folder, list_zip
from medmnist_lit.data.sources import read_folder, read_zip

CLASSES = {"AbdomenCT": 4, "BreastMRI": 3, "CXR": 5}


def pillow_stack(folder: Path, ids: np.ndarray, mode: str = "L", size: int | None = None) -> np.ndarray:
    """Reference decode: plain Pillow, one file at a time."""
    images = []
    for sample_id in ids:
        with Image.open(folder / sample_id) as img:
            img = img.convert(mode)
            if size is not None:
                img = img.resize((size, size), Image.Resampling.BILINEAR)
            images.append(np.asarray(img))
    return np.stack(images)


def assert_same(a, b) -> None:
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.ids, b.ids)
    assert a.class_names == b.class_names


# ---------------------------------------------------------------------------------------- folders
def test_folder_layout_labels_ids_and_pixels(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "mm", CLASSES)
    data = read_folder(root)
    assert data.class_names == ("AbdomenCT", "BreastMRI", "CXR")
    assert data.images.shape == (12, 8, 8) and data.images.dtype == np.uint8
    assert data.labels.dtype == np.int64 and data.labels.tolist() == [0] * 4 + [1] * 3 + [2] * 5
    assert data.ids[0] == "AbdomenCT/000000.jpeg" and data.ids[-1] == "CXR/000004.jpeg"
    assert data.counts() == CLASSES
    np.testing.assert_array_equal(data.images, pillow_stack(root, data.ids))


def test_class_order_matches_imagefolder_sorting(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path, {"b": 1, "B": 1, "a": 2, "A": 1})
    data = read_folder(root)
    assert data.class_names == tuple(sorted(["b", "B", "a", "A"]))  # torchvision's ImageFolder order
    assert list(data.ids) == ["A/000000.jpeg", "B/000000.jpeg", "a/000000.jpeg", "a/000001.jpeg", "b/000000.jpeg"]


def test_files_sorted_by_name_within_class(tmp_path: Path) -> None:
    for name in ["10.png", "2.png", "b.jpg", "A.JPEG"]:
        write_image(tmp_path / "x" / name)
    write_image(tmp_path / "y" / "1.bmp")
    assert list(read_folder(tmp_path).ids) == ["x/10.png", "x/2.png", "x/A.JPEG", "x/b.jpg", "y/1.bmp"]


def test_wrapper_folder_detected(tmp_path: Path) -> None:
    plain = read_folder(make_image_folder(tmp_path / "plain", CLASSES))
    wrapped = read_folder(make_image_folder(tmp_path / "wrapped", CLASSES, wrap="medical_mnist"))
    assert_same(plain, wrapped)


def test_junk_files_ignored(tmp_path: Path) -> None:
    clean = read_folder(make_image_folder(tmp_path / "clean", CLASSES))
    junky = read_folder(make_image_folder(tmp_path / "junky", CLASSES, junk=True, wrap="top"))
    assert_same(clean, junky)


def test_rgb_images_converted_like_pillow(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path, CLASSES, rgb=True, size=16)
    gray, rgb = read_folder(root), read_folder(root, channels=3)
    assert gray.images.shape == (12, 16, 16) and rgb.images.shape == (12, 16, 16, 3)
    np.testing.assert_array_equal(gray.images, pillow_stack(root, gray.ids, "L"))
    np.testing.assert_array_equal(rgb.images, pillow_stack(root, rgb.ids, "RGB"))


def test_grayscale_to_three_channels(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path, CLASSES)
    gray, rgb = read_folder(root), read_folder(root, channels=3)
    np.testing.assert_array_equal(rgb.images, np.repeat(gray.images[..., None], 3, axis=-1))


def test_resize_only_when_asked(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path, CLASSES, size=16)
    small = read_folder(root, image_size=6)
    assert small.images.shape == (12, 6, 6)
    np.testing.assert_array_equal(small.images, pillow_stack(root, small.ids, "L", size=6))
    assert read_folder(root, image_size=16).images.shape == (12, 16, 16)


def test_mixed_sizes_resized_with_image_size(tmp_path: Path) -> None:
    make_image_folder(tmp_path, CLASSES, size=8)
    write_image(tmp_path / "CXR" / "big.png", size=(12, 10))
    data = read_folder(tmp_path, image_size=8)
    assert data.images.shape == (13, 8, 8)


def test_png_palette_and_rgba_are_converted(tmp_path: Path) -> None:
    pixels = synthetic_pixels(1, 8, rgb=True)[0]
    write_image(tmp_path / "A" / "x.png", pixels)
    Image.fromarray(pixels).convert("P").save(tmp_path / "A" / "p.png")
    (tmp_path / "B").mkdir()
    Image.fromarray(pixels).convert("RGBA").save(tmp_path / "B" / "rgba.png")
    data = read_folder(tmp_path)
    np.testing.assert_array_equal(data.images, pillow_stack(tmp_path, data.ids, "L"))


# -------------------------------------------------------------------------------------------- zips
@pytest.mark.parametrize("prefix", ["", "medical_mnist/"])
@pytest.mark.parametrize("compression", [zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED, zipfile.ZIP_BZIP2])
def test_zip_identical_to_folder(tmp_path: Path, prefix: str, compression: int) -> None:
    root = make_image_folder(tmp_path / "mm", CLASSES)
    archive = make_zip(root, tmp_path / "mm.zip", prefix=prefix, compression=compression)
    assert_same(read_folder(root), read_zip(archive))


def test_zip_with_prepended_data(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "mm", CLASSES)
    archive = make_zip(root, tmp_path / "mm.zip")
    prefixed = tmp_path / "sfx.zip"
    prefixed.write_bytes(b"#!/bin/sh\necho self-extracting stub\n" * 50 + archive.read_bytes())
    assert_same(read_zip(archive), read_zip(prefixed))
    assert list_zip(prefixed).fingerprint != list_zip(archive).fingerprint  # the size differs


def test_zip_read_in_place_writes_nothing(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "mm", CLASSES)
    (tmp_path / "zips").mkdir()
    archive = make_zip(root, tmp_path / "zips" / "mm.zip")
    before = sorted(p.name for p in archive.parent.iterdir())
    read_zip(archive)
    assert sorted(p.name for p in archive.parent.iterdir()) == before


def test_zip_without_directory_entries_and_with_junk(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "mm", CLASSES, junk=True, wrap="medical_mnist")
    archive = make_zip(root, tmp_path / "mm.zip", directories=False, extra={"__MACOSX/x/._a.jpeg": b"junk"})
    clean = read_folder(make_image_folder(tmp_path / "clean", CLASSES))
    assert_same(clean, read_zip(archive))


def test_zip_listing_fingerprint_changes_with_content(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "mm", CLASSES)
    first = list_zip(make_zip(root, tmp_path / "a.zip")).fingerprint
    write_image(root / "CXR" / "000000.jpeg", seed=99)
    assert list_zip(make_zip(root, tmp_path / "b.zip")).fingerprint != first


@pytest.mark.parametrize("entry", ["../evil.jpeg", "/abs/evil.jpeg", "A/../../evil.jpeg", "C:/evil.jpeg"])
def test_zip_entry_outside_layout_is_an_error(tmp_path: Path, entry: str) -> None:
    root = make_image_folder(tmp_path / "mm", CLASSES)
    archive = make_zip(root, tmp_path / "mm.zip", extra={entry: encode(synthetic_pixels(1)[0])})
    with pytest.raises(DataError, match=r"zip entry .*evil\.jpeg.* outside"):
        read_zip(archive)
    assert not (tmp_path / "evil.jpeg").exists()


def test_zip_image_at_wrong_depth_is_an_error(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "mm", CLASSES)
    archive = make_zip(root, tmp_path / "a.zip", extra={"stray.jpeg": encode(synthetic_pixels(1)[0])})
    with pytest.raises(DataError, match=r"stray\.jpeg .* outside a class folder"):
        read_zip(archive)
    archive = make_zip(root, tmp_path / "b.zip", extra={"CXR/deeper/x.jpeg": encode(synthetic_pixels(1)[0])})
    with pytest.raises(DataError, match=r"CXR/deeper/x\.jpeg .* sub-folder of class folder 'CXR/'"):
        read_zip(archive)


def test_zip_corrupt_member_is_a_bad_file(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "mm", CLASSES)
    archive = make_zip(root, tmp_path / "mm.zip", compression=zipfile.ZIP_STORED)
    blob = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo("CXR/000002.jpeg")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    blob[start + 100] ^= 0xFF  # flip a byte inside the member: CRC no longer matches
    archive.write_bytes(bytes(blob))
    with pytest.raises(DataError, match=r"CXR/000002\.jpeg \(BadZipFile: CRC"):
        read_zip(archive)


def test_not_a_zip(tmp_path: Path) -> None:
    bogus = tmp_path / "data.zip"
    bogus.write_bytes(b"this is not a zip archive at all")
    with pytest.raises(DataError, match=r"cannot read .*data\.zip.* as a zip"):
        read_zip(bogus)


# ------------------------------------------------------------------------ a zip's folder tree, two ways
PLAIN_NAMES = [
    "mm/", "mm/A/", "mm/A/b.jpeg", "mm/A/a.JPG", "mm/A/README.jpeg", "mm/A/.hidden.jpeg", "mm/A/notes.csv",
    "mm/B/x.tar.gz", "mm/B/noext", "mm/B/c.webp", "mm/C/.DS_Store", "mm/D/", "mm/D/readme.txt", "mm/E/Thumbs.db",
    "mm/F/sub/", "mm/G/deep/er/z.png", "__MACOSX/mm/A/._b.jpeg", "mm/.git/x.jpeg", "top.jpeg", "notes.md",
    "mm/A/a.jpeg", "mm/H/PK\x01\x02.png",
]  # fmt: skip


def tree_shape(node: ZipNode) -> dict[str, object]:
    return {
        "label": node.label,
        "files": node.files,
        "images": node.images(),
        "dirs": {name: tree_shape(child) for name, child in node.dirs.items()},
    }


def test_zip_tree_folder_by_folder_equals_member_by_member() -> None:
    plain = _plain_tree(PLAIN_NAMES)
    assert plain is not None
    assert tree_shape(plain) == tree_shape(_any_tree(PLAIN_NAMES, [False] * len(PLAIN_NAMES), "s.zip"))
    assert plain.dirs["mm"].dirs["A"].images() == ["a.JPG", "a.jpeg", "b.jpeg"]
    assert "C" not in plain.dirs["mm"].dirs and "E" not in plain.dirs["mm"].dirs  # only junk: no folder


@pytest.mark.parametrize(
    "odd", ["./mm/A/q.jpeg", "mm//A/q.jpeg", "mm\\A\\q.jpeg", "mm/A/./q.jpeg", "mm/A/q.jpeg/.", ""]
)
def test_zip_tree_other_names_go_member_by_member(odd: str) -> None:
    names = [*PLAIN_NAMES, odd]
    assert _plain_tree(names) is None
    assert tree_shape(zip_tree(names, [False] * len(names), "s.zip")) == tree_shape(
        _any_tree(names, [False] * len(names), "s.zip")
    )
    assert _plain_tree([*PLAIN_NAMES, "mm/B/noext"]) is None  # a name listed twice


def test_zip_tree_errors_name_the_first_culprit_in_archive_order() -> None:
    names = ["A/", "A/x.jpeg", "B/y.jpeg", "A/x.jpeg", "../evil.jpeg"]
    with pytest.raises(DataError, match=r"^zip entry 'A/x\.jpeg' appears twice in 's\.zip'$"):
        zip_tree(names, [False] * 5, "s.zip")
    with pytest.raises(DataError, match=r"^zip entry 'B/y\.jpeg' in 's\.zip' is encrypted, which is not supported$"):
        zip_tree(names, [False, False, True, False, False], "s.zip")
    with pytest.raises(DataError, match=r"^zip entry '\.\./evil\.jpeg' in 's\.zip' points outside"):
        zip_tree(["A/x.jpeg", "../evil.jpeg", "A/x.jpeg"], [False] * 3, "s.zip")
    encrypted_junk = zip_tree(["A/x.jpeg", "A/.DS_Store", "B/notes.txt"], [False, True, True], "s.zip")
    assert encrypted_junk.dirs["A"].files == {"x.jpeg": 0}


def test_zip_with_a_member_listed_twice_or_encrypted(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "mm", CLASSES)
    with pytest.warns(UserWarning, match="Duplicate name"):  # zipfile writes it all the same
        archive = make_zip(root, tmp_path / "dup.zip", extra={"CXR/000001.jpeg": b"again"})
    with pytest.raises(DataError, match=r"zip entry 'CXR/000001\.jpeg' appears twice in .*dup\.zip"):
        list_zip(archive)
    blob = bytearray(make_zip(root, tmp_path / "enc.zip").read_bytes())
    record = blob.index(b"BreastMRI/000002.jpeg", blob.index(b"PK\x01\x02")) - 46  # its central-directory record
    blob[record + 8] |= 0x01  # flag bit 0: encrypted
    (tmp_path / "enc.zip").write_bytes(bytes(blob))
    with pytest.raises(DataError, match=r"zip entry 'BreastMRI/000002\.jpeg' in .*enc\.zip.* is encrypted"):
        list_zip(tmp_path / "enc.zip")


# --------------------------------------------------------------------------------- folder errors
def test_missing_source(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"does not exist.*--data\.source.*medmnist-lit download"):
        read_folder(tmp_path / "nope")


def test_unknown_file_type(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("a,b\n")
    with pytest.raises(DataError, match=r"unsupported data source file type '\.csv'"):
        read_folder(tmp_path / "labels.csv")


def test_empty_dataset(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("nothing here")
    with pytest.raises(DataError, match=r"no class folders .* the dataset is empty"):
        read_folder(tmp_path)


def test_only_one_class(tmp_path: Path) -> None:
    make_image_folder(tmp_path, {"CXR": 3})
    with pytest.raises(DataError, match=r"only one class \('CXR'\)"):
        read_folder(tmp_path)


def test_class_folder_without_images(tmp_path: Path) -> None:
    make_image_folder(tmp_path, CLASSES)
    (tmp_path / "Hand").mkdir()
    (tmp_path / "Hand" / "notes.txt").write_text("todo")
    with pytest.raises(DataError, match=r"class folder 'Hand/' .* has no images"):
        read_folder(tmp_path)


def test_image_beside_class_folders(tmp_path: Path) -> None:
    make_image_folder(tmp_path, CLASSES)
    write_image(tmp_path / "loose.jpeg")
    with pytest.raises(DataError, match=r"loose\.jpeg .* outside a class folder"):
        read_folder(tmp_path)


def test_nested_folder_inside_class(tmp_path: Path) -> None:
    make_image_folder(tmp_path, CLASSES)
    write_image(tmp_path / "CXR" / "more" / "x.jpeg")
    with pytest.raises(DataError, match=r"CXR/more/x\.jpeg .* sub-folder of class folder 'CXR/'"):
        read_folder(tmp_path)


def test_mixed_sizes_name_two_files(tmp_path: Path) -> None:
    make_image_folder(tmp_path, CLASSES, size=8)
    write_image(tmp_path / "CXR" / "big.png", size=(12, 10))
    with pytest.raises(
        DataError, match=r"different sizes: AbdomenCT/000000\.jpeg is 8×8 but CXR/big\.png is 12×10.*--data\.image_size"
    ):
        read_folder(tmp_path)


def test_unreadable_images_listed(tmp_path: Path) -> None:
    make_image_folder(tmp_path, CLASSES)
    good = (tmp_path / "CXR" / "000000.jpeg").read_bytes()
    (tmp_path / "CXR" / "000001.jpeg").write_bytes(good[: len(good) // 2])  # truncated
    for i in range(6):
        (tmp_path / "BreastMRI" / f"bad{i}.jpeg").write_bytes(b"not an image")
    with pytest.raises(DataError) as info:
        read_folder(tmp_path)
    message = str(info.value)
    assert "7 of 18 images" in message and "first 5 shown" in message and "--data.skip_bad true" in message
    assert "BreastMRI/bad0.jpeg (UnidentifiedImageError" in message
    assert message.count("BreastMRI/bad") == 5 and "CXR/000001.jpeg" not in message


def test_truncated_image_named(tmp_path: Path) -> None:
    make_image_folder(tmp_path, CLASSES)
    good = (tmp_path / "CXR" / "000000.jpeg").read_bytes()
    (tmp_path / "CXR" / "000001.jpeg").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=r"(?i)1 of 12 images .* CXR/000001\.jpeg \(OSError: .*truncated"):
        read_folder(tmp_path)


def test_skip_bad_skips_and_records(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    make_image_folder(tmp_path, CLASSES)
    (tmp_path / "BreastMRI" / "000001.jpeg").write_bytes(b"broken")
    with caplog.at_level(logging.WARNING):
        data = read_folder(tmp_path, skip_bad=True)
    assert len(data) == 11 and "BreastMRI/000001.jpeg" not in data.ids
    assert data.meta["skipped"][0]["id"] == "BreastMRI/000001.jpeg"
    assert "Skipped 1 unreadable image" in caplog.text
    assert data.counts() == {"AbdomenCT": 4, "BreastMRI": 2, "CXR": 5}


def test_all_images_unreadable(tmp_path: Path) -> None:
    for name in ("A", "B"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x.jpeg").write_bytes(b"nope")
    with pytest.raises(DataError, match=r"none of the 2 images .* could be decoded"):
        read_folder(tmp_path, skip_bad=True)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"channels": 2}, "channels must be 1 .* or 3"), ({"image_size": 0}, "image_size must be a positive integer")],
)
def test_bad_options(tmp_path: Path, kwargs: dict, match: str) -> None:
    make_image_folder(tmp_path, CLASSES)
    with pytest.raises(DataError, match=match):
        read_folder(tmp_path, **kwargs)


def test_folder_fingerprint_tracks_changes(tmp_path: Path) -> None:
    make_image_folder(tmp_path, CLASSES)
    first = list_folder(tmp_path).fingerprint
    assert list_folder(tmp_path).fingerprint == first
    (tmp_path / "CXR" / ".DS_Store").write_bytes(b"junk")
    assert list_folder(tmp_path).fingerprint == first
    write_image(tmp_path / "CXR" / "new.jpeg")
    assert list_folder(tmp_path).fingerprint != first


# --------------------------------------------------------------------------------------------- npz
def test_npz_gray_with_predefined_split(tmp_path: Path) -> None:
    path = make_npz(tmp_path / "pneumoniamnist.npz", n_train=6, n_val=2, n_test=3, num_classes=2)
    data = read_npz(path)
    raw = np.load(path)
    np.testing.assert_array_equal(
        data.images, np.concatenate([raw["train_images"], raw["val_images"], raw["test_images"]])
    )
    assert data.labels.dtype == np.int64 and data.labels.shape == (11,)
    assert data.class_names == ("0", "1")  # binary sets work
    assert data.predefined is not None
    assert data.predefined.tolist() == [PREDEFINED_CODES["train"]] * 6 + [1] * 2 + [2] * 3
    assert list(data.ids[[0, 6, 8]]) == ["train/000000", "val/000000", "test/000000"]


def test_npz_rgb_channels(tmp_path: Path) -> None:
    path = make_npz(tmp_path / "blood.npz", rgb=True, size=8, num_classes=4)
    rgb = read_npz(path, channels=3)
    gray = read_npz(path)
    assert rgb.images.shape == (20, 8, 8, 3) and gray.images.shape == (20, 8, 8)
    expected = np.stack([np.asarray(Image.fromarray(x).convert("L")) for x in rgb.images])
    np.testing.assert_array_equal(gray.images, expected)  # same luma as Pillow's convert("L")
    assert gray.class_names == ("0", "1", "2", "3")


def test_npz_resize_matches_pillow(tmp_path: Path) -> None:
    data = read_npz(make_npz(tmp_path / "x.npz", size=8), image_size=5)
    raw = read_npz(tmp_path / "x.npz")
    expected = np.stack([np.asarray(Image.fromarray(x).resize((5, 5), Image.Resampling.BILINEAR)) for x in raw.images])
    np.testing.assert_array_equal(data.images, expected)


def test_luma_matches_pillow_exactly() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    rgb[0, :3] = [[255, 255, 255], [0, 0, 0], [255, 0, 128]]
    np.testing.assert_array_equal(to_luma(rgb), np.asarray(Image.fromarray(rgb).convert("L")))


def test_npz_missing_keys(tmp_path: Path) -> None:
    path = tmp_path / "partial.npz"
    np.savez(path, train_images=np.zeros((2, 4, 4), np.uint8), train_labels=np.zeros((2, 1), np.uint8))
    with pytest.raises(DataError, match=r"partial\.npz.* lacks key\(s\) val_images, val_labels, test_images"):
        read_npz(path)


@pytest.mark.parametrize(
    ("npz_kwargs", "match"),
    [
        (
            {"val_labels": np.array([[0], [1], "x", None], dtype=object)},
            r"key 'val_labels' of .*x\.npz.* object array.*allow_pickle=False",
        ),
        (
            {"multilabel": 14, "val_labels": np.full((4, 14), 2, np.uint8)},
            r"'val_labels' in .*x\.npz' holds values other than 0 and 1: multi-label targets must be 0/1",
        ),
        (
            {"multilabel": 14, "test_labels": np.zeros((4, 1), np.uint8)},
            r"disagree on the task: .*'test_labels' \(4,\)",
        ),
        ({"test_labels": np.zeros((3, 1), np.uint8)}, r"'test_labels' has 3 entries but 'test_images' has 4"),
        ({"num_classes": 1}, r"only one class"),
        ({"n_train": 0, "n_val": 0, "n_test": 0}, r"holds no images: the dataset is empty"),
        ({"train_images": np.zeros((12, 8, 8))}, r"'train_images' .* is float64; expected uint8"),
    ],
    ids=["object-array", "multilabel-values", "multilabel-mixed", "label-count", "one-class", "empty", "float-images"],
)
def test_malformed_npz(tmp_path: Path, npz_kwargs: dict, match: str) -> None:
    with pytest.raises(DataError, match=match):
        read_npz(make_npz(tmp_path / "x.npz", **npz_kwargs))


def test_npz_not_an_npz(tmp_path: Path) -> None:
    path = tmp_path / "x.npz"
    path.write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"cannot read .*x\.npz.* as a \.npz file"):
        read_npz(path)


# ------------------------------------------------------------------------------------------ digits
def test_digits_demo(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="medmnist_lit.data.arrays"):
        data = read_digits()
    assert data.images.shape == (1797, 8, 8) and data.images.dtype == np.uint8
    assert data.images.max() == 255 and data.images.min() == 0
    assert data.class_names == tuple(str(i) for i in range(10))
    assert data.ids[0] == "digits/0000" and data.ids[-1] == "digits/1796"
    messages = [r.getMessage() for r in caplog.records if r.name == "medmnist_lit.data.arrays"]
    assert len(messages) == 1 and "--data.source PATH" in messages[0] and "medmnist-lit download" in messages[0]


def test_digits_conversions() -> None:
    data = read_digits(channels=3, image_size=16)
    assert data.images.shape == (1797, 16, 16, 3)


def test_jpeg_bytes_helper_roundtrip() -> None:
    pixels = synthetic_pixels(1, 16)[0]
    decoded = np.asarray(Image.open(io.BytesIO(encode(pixels))))
    assert decoded.shape == (16, 16) and np.abs(decoded.astype(int) - pixels).mean() < 10
