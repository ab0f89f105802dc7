"""The decode-once cache: hits, invalidation, crash safety, parallel decode, prepare() and import weight."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from datagen import make_image_folder, make_npz, make_zip, write_image

import medmnist_lit.data.decode as decode_module
import medmnist_lit.data.fingerprint as fingerprint_module
from medmnist_lit.data import cache
from medmnist_lit.data.cache import PrepareResult, default_cache_dir, load_dataset, prepare
from medmnist_lit.data.decode import decode_listing
from medmnist_lit.data.fingerprint import source_fingerprint
from medmnist_lit.data.layout import DataError
from medmnist_lit.data.listing import list_folder, list_zip
from medmnist_lit.data.sources import read_folder

CLASSES = {"AbdomenCT": 5, "BreastMRI": 3, "CXR": 4}
REPO = Path(__file__).resolve().parents[2]


def entries(cache_dir: Path) -> list[Path]:
    return sorted(p for p in cache_dir.iterdir()) if cache_dir.exists() else []


def forbid_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded although the cache should have been used")

    monkeypatch.setattr(cache, "decode_files", fail)
    monkeypatch.setattr(cache, "read_npz", fail)


def bump(path: Path) -> None:
    """Rewrite a file with new pixels and a clearly different mtime."""
    write_image(path, seed=1234)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "medical_mnist", CLASSES)


@pytest.fixture
def fork_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fork decode workers although conftest imported torch: they only run Pillow and numpy, and spawning
    them re-imports pytest (seconds). The spawn path has its own test."""
    monkeypatch.setattr(decode_module, "fork_is_safe", lambda: True)


def test_first_load_builds_entry_then_memory_maps(folder: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    first = load_dataset(folder, cache_dir=cache_dir)
    assert first.meta["from_cache"] is False
    (entry,) = entries(cache_dir)
    assert sorted(p.name for p in entry.iterdir()) == ["ids.npy", "images.npy", "labels.npy", "manifest.json"]
    manifest = json.loads((entry / "manifest.json").read_text())
    assert manifest["kind"] == "folder" and manifest["source"] == str(folder.resolve())
    assert manifest["counts"] == CLASSES and manifest["shape"] == [12, 8, 8]
    assert manifest["options"] == {"channels": 1, "image_size": None} and manifest["skipped"] == []
    assert manifest["fingerprint"] == source_fingerprint(folder.resolve(), "folder")
    assert np.load(entry / "ids.npy").dtype.kind == "U"  # numpy unicode, not pickled objects

    second = load_dataset(folder, cache_dir=cache_dir)
    assert second.meta["from_cache"] is True and second.meta["cache_path"] == str(entry)
    assert isinstance(second.images, np.memmap) and not second.images.flags.writeable
    reference = read_folder(folder)
    for data in (first, second):
        np.testing.assert_array_equal(data.images, reference.images)
        np.testing.assert_array_equal(data.labels, reference.labels)
        np.testing.assert_array_equal(data.ids, reference.ids)
        assert data.class_names == reference.class_names


def test_cache_hit_does_not_decode(folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    load_dataset(folder, cache_dir=tmp_path / "cache")
    forbid_decoding(monkeypatch)
    assert load_dataset(folder, cache_dir=tmp_path / "cache").meta["from_cache"]


def test_options_get_their_own_entries(folder: Path, tmp_path: Path) -> None:
    load_dataset(folder, cache_dir=tmp_path / "cache")
    rgb = load_dataset(folder, cache_dir=tmp_path / "cache", channels=3, image_size=4)
    assert rgb.images.shape == (12, 4, 4, 3) and not rgb.meta["from_cache"]
    assert len(entries(tmp_path / "cache")) == 2


@pytest.mark.parametrize("change", ["modify", "add", "remove", "add_class"])
def test_changed_source_invalidates(folder: Path, tmp_path: Path, change: str) -> None:
    cache_dir = tmp_path / "cache"
    before = load_dataset(folder, cache_dir=cache_dir)
    if change == "modify":
        bump(folder / "CXR" / "000001.jpeg")
    elif change == "add":
        write_image(folder / "CXR" / "new.jpeg", seed=5)
    elif change == "remove":
        (folder / "CXR" / "000001.jpeg").unlink()
    else:
        make_image_folder(folder, {"Hand": 2})
    after = load_dataset(folder, cache_dir=cache_dir)
    assert after.meta["from_cache"] is False
    reference = read_folder(folder)
    np.testing.assert_array_equal(after.images, reference.images)
    np.testing.assert_array_equal(after.ids, reference.ids)
    if change == "modify":
        assert not np.array_equal(after.images, before.images)
    assert len(entries(cache_dir)) == 1  # the superseded entry is removed
    assert load_dataset(folder, cache_dir=cache_dir).meta["from_cache"]


def test_cached_load_reuses_names_while_folder_mtimes_hold(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_dataset(folder, cache_dir=tmp_path / "cache")

    def no_listing(*args: object) -> bytes:
        raise AssertionError("listed a class folder although its mtime did not change")

    monkeypatch.setattr(fingerprint_module, "scan_class_dir", no_listing)
    assert load_dataset(folder, cache_dir=tmp_path / "cache").meta["from_cache"]
    (folder / "CXR" / ".DS_Store").write_bytes(b"junk")  # the CXR folder's mtime changes: it must be listed
    with pytest.raises(AssertionError, match="listed a class folder"):
        load_dataset(folder, cache_dir=tmp_path / "cache")
    monkeypatch.undo()
    assert load_dataset(folder, cache_dir=tmp_path / "cache").meta["from_cache"]  # same images: still a hit


def test_touched_file_invalidates(folder: Path, tmp_path: Path) -> None:
    load_dataset(folder, cache_dir=tmp_path / "cache")
    target = folder / "BreastMRI" / "000002.jpeg"
    stat = target.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # same bytes, new mtime
    assert not load_dataset(folder, cache_dir=tmp_path / "cache").meta["from_cache"]


def test_junk_does_not_invalidate(folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    load_dataset(folder, cache_dir=tmp_path / "cache")
    (folder / "CXR" / ".DS_Store").write_bytes(b"junk")
    (folder / "README.md").write_text("hello")
    forbid_decoding(monkeypatch)
    assert load_dataset(folder, cache_dir=tmp_path / "cache").meta["from_cache"]


def test_layout_error_after_caching_is_still_reported(folder: Path, tmp_path: Path) -> None:
    load_dataset(folder, cache_dir=tmp_path / "cache")
    write_image(folder / "CXR" / "nested" / "x.jpeg")
    with pytest.raises(DataError, match="sub-folder of class folder"):
        load_dataset(folder, cache_dir=tmp_path / "cache")


def test_interrupted_decode_leaves_nothing_trusted(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache_dir = tmp_path / "cache"
    real = decode_module.decode_range

    def crash_midway(reader: Any, out: np.ndarray, start: int, stop: int, *args: Any) -> None:
        real(reader, out, start, start + 3, *args)  # some pixels are written ...
        raise KeyboardInterrupt  # ... then the user presses Ctrl-C

    monkeypatch.setattr(decode_module, "decode_range", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        load_dataset(folder, cache_dir=cache_dir, workers=1)
    assert entries(cache_dir) == []  # the temporary build directory is gone too
    monkeypatch.undo()
    data = load_dataset(folder, cache_dir=cache_dir)
    assert data.meta["from_cache"] is False
    np.testing.assert_array_equal(data.images, read_folder(folder).images)


def test_crash_before_manifest_is_not_trusted(folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache_dir = tmp_path / "cache"

    def die(*args: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(cache, "_commit", die)
    with pytest.raises(RuntimeError, match="disk full"):
        load_dataset(folder, cache_dir=cache_dir)
    assert entries(cache_dir) == []


def test_killed_build_leftovers_are_ignored(folder: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    load_dataset(folder, cache_dir=cache_dir)
    (entry,) = entries(cache_dir)
    (entry / "manifest.json").unlink()  # e.g. an entry whose manifest never got written
    leftover = cache_dir / ".tmp-medical_mnist-folder-x-abc"
    leftover.mkdir()
    old = time.time() - 3 * 24 * 3600
    os.utime(leftover, (old, old))
    data = load_dataset(folder, cache_dir=cache_dir)
    assert data.meta["from_cache"] is False
    assert [p.name for p in entries(cache_dir)] == [entry.name]  # rebuilt in place, leftover removed
    assert load_dataset(folder, cache_dir=cache_dir).meta["from_cache"]


def test_lost_race_keeps_the_winner(folder: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    load_dataset(folder, cache_dir=cache_dir)
    (entry,) = entries(cache_dir)
    manifest = json.loads((entry / "manifest.json").read_text())
    loser = cache_dir / ".tmp-loser"
    loser.mkdir()
    (loser / "marker").write_text("mine")
    cache._commit(loser, entry, manifest["fingerprint"])
    assert not loser.exists() and (entry / "manifest.json").exists()


def test_parallel_decode_equals_sequential(tmp_path: Path, fork_workers: None) -> None:
    root = make_image_folder(tmp_path / "mm", {"A": 30, "B": 25, "C": 20}, size=16)
    one = load_dataset(root, cache_dir=tmp_path / "c1", workers=1)
    two = load_dataset(root, cache_dir=tmp_path / "c2", workers=2)
    assert json.loads((Path(two.meta["cache_path"]) / "manifest.json").read_text())["workers"] == 2
    np.testing.assert_array_equal(one.images, two.images)
    np.testing.assert_array_equal(one.ids, two.ids)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_parallel_start_methods(tmp_path: Path, method: str) -> None:
    root = make_image_folder(tmp_path / "mm", {"A": 6, "B": 5}, size=8, rgb=True)
    make_zip(root, tmp_path / "mm.zip")
    for listing in (list_folder(root), list_zip(tmp_path / "mm.zip")):
        expected = decode_listing(listing, channels=3)
        out = tmp_path / f"{method}-{listing.kind}.npy"
        got = decode_listing(listing, channels=3, workers=2, out_path=out, start_method=method)
        assert got.workers == 2
        np.testing.assert_array_equal(got.images, expected.images)


def test_parallel_decode_reports_bad_files(tmp_path: Path, fork_workers: None) -> None:
    root = make_image_folder(tmp_path / "mm", {"A": 8, "B": 8})
    (root / "B" / "000003.jpeg").write_bytes(b"broken")
    with pytest.raises(DataError, match=r"1 of 16 images .* B/000003\.jpeg"):
        load_dataset(root, cache_dir=tmp_path / "cache", workers=2)
    assert entries(tmp_path / "cache") == []


def test_skip_bad_is_cached_and_enforced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fork_workers: None) -> None:
    root = make_image_folder(tmp_path / "mm", CLASSES)
    (root / "CXR" / "000002.jpeg").write_bytes(b"broken")
    data = load_dataset(root, cache_dir=tmp_path / "cache", skip_bad=True, workers=2)
    assert len(data) == 11 and data.meta["skipped"][0]["id"] == "CXR/000002.jpeg"
    assert "CXR/000002.jpeg" not in data.ids and data.images.shape == (11, 8, 8)
    np.testing.assert_array_equal(data.images, read_folder(root, skip_bad=True).images)
    manifest = json.loads((Path(data.meta["cache_path"]) / "manifest.json").read_text())
    assert manifest["skipped"][0]["id"] == "CXR/000002.jpeg" and manifest["num_images"] == 11
    forbid_decoding(monkeypatch)
    assert load_dataset(root, cache_dir=tmp_path / "cache", skip_bad=True).meta["from_cache"]
    with pytest.raises(DataError, match=r"CXR/000002\.jpeg .*--data\.skip_bad true"):
        load_dataset(root, cache_dir=tmp_path / "cache")


def test_zip_through_cache_equals_folder(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fork_workers: None
) -> None:
    archive = make_zip(folder, tmp_path / "mm.zip", prefix="medical_mnist/")
    from_folder = load_dataset(folder, cache_dir=tmp_path / "cache")
    from_zip = load_dataset(archive, cache_dir=tmp_path / "cache", workers=2)
    np.testing.assert_array_equal(from_folder.images, from_zip.images)
    np.testing.assert_array_equal(from_folder.ids, from_zip.ids)
    forbid_decoding(monkeypatch)
    assert load_dataset(archive, cache_dir=tmp_path / "cache").meta["from_cache"]
    monkeypatch.undo()
    make_zip(make_image_folder(tmp_path / "other", CLASSES, seed=3), archive)
    assert not load_dataset(archive, cache_dir=tmp_path / "cache").meta["from_cache"]


def test_npz_through_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_npz(tmp_path / "organ.npz", rgb=True, num_classes=4)
    first = load_dataset(path, cache_dir=tmp_path / "cache", channels=1, image_size=4)
    assert first.images.shape == (20, 4, 4) and first.predefined is not None
    forbid_decoding(monkeypatch)
    second = load_dataset(path, cache_dir=tmp_path / "cache", channels=1, image_size=4)
    assert second.meta["from_cache"] and second.meta["kind"] == "npz"
    np.testing.assert_array_equal(first.images, second.images)
    np.testing.assert_array_equal(first.predefined, second.predefined)
    assert list(second.ids[:1]) == ["train/000000"]


def test_npz_errors_through_cache(tmp_path: Path) -> None:
    path = make_npz(tmp_path / "chest.npz", multilabel=14, train_labels=np.full((12, 14), 3, np.uint8))
    with pytest.raises(DataError, match="multi-label targets must be 0/1"):
        load_dataset(path, cache_dir=tmp_path / "cache")
    assert entries(tmp_path / "cache") == []


def test_digits_are_not_cached(tmp_path: Path) -> None:
    data = load_dataset(None, cache_dir=tmp_path / "cache")
    assert len(data) == 1797 and data.num_classes == 10
    assert not (tmp_path / "cache").exists()


def test_missing_and_unknown_sources(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "missing", cache_dir=tmp_path / "cache")
    (tmp_path / "x.tar.gz").write_bytes(b"x")
    with pytest.raises(DataError, match=r"unsupported data source file type '\.gz'"):
        load_dataset(tmp_path / "x.tar.gz", cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("name", ["broken.zip", "broken.npz"])
def test_truncated_archive(tmp_path: Path, name: str) -> None:
    if name.endswith(".npz"):
        whole = make_npz(tmp_path / "x.npz")
    else:
        whole = make_zip(make_image_folder(tmp_path / "f"), tmp_path / "x.zip")
    data = whole.read_bytes()
    (tmp_path / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=rf"{name}.* (not a valid \.(zip|npz) archive|as a zip file)"):
        load_dataset(tmp_path / name, cache_dir=tmp_path / "cache")


def test_unwritable_cache_dir(folder: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(DataError, match=r"cannot create the cache directory .*MEDMNIST_LIT_CACHE"):
        load_dataset(folder, cache_dir=blocker / "cache")


def test_default_cache_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    monkeypatch.setenv("MEDMNIST_LIT_CACHE", str(tmp_path / "envcache"))
    assert default_cache_dir() == tmp_path / "envcache"
    data = load_dataset(folder)
    assert Path(data.meta["cache_path"]).parent == tmp_path / "envcache"
    monkeypatch.delenv("MEDMNIST_LIT_CACHE")
    assert default_cache_dir().name == "medmnist-lit"


def test_fingerprints_agree(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "src", {"A": 3, "B": 2, "C": 4}, wrap="medical_mnist")
    listed = list_folder(root).fingerprint
    assert source_fingerprint(root, "folder") == listed
    load_dataset(root, cache_dir=tmp_path / "cache")
    (entry,) = entries(tmp_path / "cache")
    manifest = json.loads((entry / "manifest.json").read_text())
    assert manifest["fingerprint"] == listed and manifest["folder_state"]["class_root"] == "medical_mnist"
    ids = np.load(entry / "ids.npy")
    assert fingerprint_module.unchanged_folder_fingerprint(root, manifest, ids) == listed
    write_image(root / "medical_mnist" / "stray.jpeg")  # an invalid layout changes the fingerprint, no error
    assert fingerprint_module.unchanged_folder_fingerprint(root, manifest, ids) is None
    assert source_fingerprint(root, "folder") != listed


def test_prepare_result_and_format(folder: Path, tmp_path: Path) -> None:
    first = prepare(folder, cache_dir=tmp_path / "cache")
    assert isinstance(first, PrepareResult)
    assert first.counts == CLASSES and first.num_images == 12 and first.image_shape == (8, 8)
    assert not first.from_cache and first.cache_path is not None and first.cache_path.is_dir()
    second = prepare(folder, cache_dir=tmp_path / "cache")
    assert second.from_cache and second.seconds >= 0
    text = str(second)
    assert "12 images, 8×8 grayscale, 3 classes" in text
    assert "  AbdomenCT   5" in text and "  total      12" in text and "from the cache" in text
    demo = prepare(None)
    assert demo.cache_path is None and demo.kind == "digits" and "(not cached)" in demo.format()


def test_cache_modules_import_light() -> None:
    code = (
        "import sys, medmnist_lit.data.cache, medmnist_lit.data.download; "
        "heavy = [m for m in ('torch', 'lightning', 'torchvision', 'sklearn', 'PIL') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
