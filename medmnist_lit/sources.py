"""Readers for each source kind: image-folder trees, zips of them, MedMNIST ``.npz`` and the digits demo.

Every reader returns an :class:`~medmnist_lit.imageset.ImageSet`. Folder and zip sources are first *listed*
(:func:`list_folder`, :func:`list_zip`: class names, sample ids, labels and an :class:`EntryReader` that
fetches one file's bytes) and then decoded by :mod:`medmnist_lit.decode`; :func:`medmnist_lit.cache.load_dataset`
does the same into a memory-mapped cache. Conversion is explicit and follows Pillow: ``channels`` 1 is
``Image.convert("L")`` (ITU-R 601-2 luma), 3 is ``Image.convert("RGB")``; ``image_size`` resizes to a square
with ``Image.Resampling.BILINEAR`` (Pillow's default ``reducing_gap=None``) after the conversion.

This module must stay light to import (no torch, torchvision, lightning or sklearn at module level).
"""

from __future__ import annotations

import logging
import os
import struct
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from medmnist_lit.decode import EntryReader, FolderEntries, ZipEntries, convert_array, decode_listing
from medmnist_lit.imageset import PREDEFINED_CODES, ImageSet

logger = logging.getLogger(__name__)

#: Extensions read as images (torchvision's ``IMG_EXTENSIONS``), compared case-insensitively.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"})
#: Keys a MedMNIST ``.npz`` must hold.
NPZ_SPLITS = ("train", "val", "test")
_EXTENSIONS_TEXT = sorted(IMAGE_EXTENSIONS)
_JUNK_NAMES = frozenset({"thumbs.db", "desktop.ini", "__macosx"})
_HINT_SOURCE = "--data.source PATH (a class-folder tree, a .zip of one, or a MedMNIST .npz)"


class DataError(ValueError):
    """A data source is missing, malformed or inconsistent; the message names the culprit and a fix."""


# ------------------------------------------------------------------------------------------- names
def is_junk(name: str) -> bool:
    """Whether a file or folder name is OS/archive clutter ignored silently (``.DS_Store``, ``README*``...)."""
    lower = name.lower()
    return name.startswith(".") or lower in _JUNK_NAMES or lower.startswith("readme") or lower.endswith(".txt")


def is_image_name(name: str) -> bool:
    """Whether a file name has an image extension and is not hidden (``._x.jpeg`` is AppleDouble junk)."""
    # Inlined extension test: called for every file, and os.path.splitext is several times slower.
    return name[:1] != "." and name[name.rfind(".") :].lower() in IMAGE_EXTENSIONS


def check_options(channels: int, image_size: int | None) -> None:
    """Validate the conversion options shared by every reader."""
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise DataError(f"image_size must be a positive integer or None, got {image_size!r}")


def source_kind(path: Path) -> str:
    """Classify an existing source path as ``"folder"``, ``"zip"`` or ``"npz"``."""
    if not path.exists():
        raise DataError(
            f"data source {str(path)!r} does not exist; pass {_HINT_SOURCE}, "
            "or run `medmnist-lit download` to fetch Medical MNIST"
        )
    if path.is_dir():
        return "folder"
    suffix = path.suffix.lower()
    if suffix in (".zip", ".npz"):
        return suffix[1:]
    raise DataError(
        f"unsupported data source file type {suffix or '(no extension)'!r} for {str(path)!r}; {_HINT_SOURCE}"
    )


@dataclass
class Listing:
    """What a folder or zip source holds, before decoding.

    Attributes:
        kind: ``"folder"`` or ``"zip"``.
        path: The source path.
        class_names: Sorted class names.
        ids: Sample ids (``"<class>/<file name>"``), in class then file-name order.
        labels: Class index per sample (int64).
        reader: Fetches the bytes of each sample.
        fingerprint: Hex digest that changes whenever the source's images change.
    """

    kind: str
    path: Path
    class_names: tuple[str, ...]
    ids: list[str]
    labels: np.ndarray
    reader: EntryReader
    fingerprint: str

    def __len__(self) -> int:
        return len(self.ids)


# ----------------------------------------------------------------------------------------- layout
class _Node(Protocol):
    label: str  # path shown in messages, e.g. "medical_mnist/CXR/"

    def subdirs(self) -> dict[str, _Node]: ...

    def images(self) -> list[str]: ...


class _DirNode:
    """A folder on disk, scanned lazily (names and ``d_type`` only; no ``stat``)."""

    def __init__(self, path: str, label: str) -> None:
        self.path, self.label = path, label
        self._scan: tuple[dict[str, _Node], list[str]] | None = None

    def _entries(self) -> tuple[dict[str, _Node], list[str]]:
        if self._scan is None:
            # Hot for 10k-file class folders: plain listdir (no DirEntry objects); only the few non-image
            # names are stat-ed to find sub-folders. A folder named like an image ("x.jpeg/") is listed as an
            # image and reported as unreadable when decoded.
            images: list[str] = []
            others: list[str] = []
            for name in os.listdir(self.path):
                (images if is_image_name(name) else others).append(name)
            dirs: dict[str, _Node] = {
                name: _DirNode(os.path.join(self.path, name), f"{self.label}{name}/")
                for name in sorted(others)
                if not is_junk(name) and os.path.isdir(os.path.join(self.path, name))
            }
            images.sort()
            self._scan = (dirs, images)
        return self._scan

    def subdirs(self) -> dict[str, _Node]:
        return self._entries()[0]

    def images(self) -> list[str]:
        return self._entries()[1]


class _ZipNode:
    """A folder of the tree spelled by a zip's entry names."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.dirs: dict[str, _ZipNode] = {}
        self.files: dict[str, int] = {}  # image file name -> index into the zip's info list

    def subdirs(self) -> dict[str, _Node]:
        return dict(self.dirs)

    def images(self) -> list[str]:
        return sorted(self.files)


def find_class_root(top: _Node) -> _Node:
    """Find the folder whose sub-folders are the classes, descending through single wrapping folders.

    A level is a wrapper when it holds no images and exactly one folder which itself holds folders
    (``medical_mnist/AbdomenCT/...``). A single folder of images is a single class (an error later).
    """
    node = top
    for _ in range(4):
        subdirs = node.subdirs()
        if len(subdirs) == 1 and not node.images():
            (only,) = subdirs.values()
            if only.subdirs():
                node = only
                continue
        break
    return node


def resolve_class_root(top: _Node, source: str) -> tuple[_Node, list[str]]:
    """Find and validate the class root below ``top``; returns it and the sorted class names."""
    node = find_class_root(top)
    if node.images():
        raise DataError(
            f"{node.label}{node.images()[0]} in {source} is an image outside a class folder; the layout must be "
            f"<root>/<class>/<image> with one sub-folder per class (like torchvision's ImageFolder)"
        )
    classes = sorted(node.subdirs())
    if not classes:
        raise DataError(f"no class folders in {source}: the dataset is empty (expected <root>/<class>/<image>)")
    for name in classes:
        cls = node.subdirs()[name]
        nested = cls.subdirs()
        if nested:
            first = sorted(nested)[0]
            raise DataError(
                f"{_first_entry(nested[first])} in {source} lies in a sub-folder of class folder "
                f"{cls.label!r}; images must sit directly in the class folders (<root>/<class>/<image>)"
            )
        if not cls.images():
            raise DataError(
                f"class folder {cls.label!r} in {source} has no images (extensions: {' '.join(_EXTENSIONS_TEXT)})"
            )
    if len(classes) < 2:
        raise DataError(
            f"only one class ({classes[0]!r}) in {source}; a classifier needs at least two class folders "
            f"(point the source at the folder that holds the class folders)"
        )
    return node, classes


def _first_entry(node: _Node) -> str:
    """The first image path below ``node`` (or the folder itself) for error messages."""
    images = node.images()
    if images:
        return node.label + images[0]
    subdirs = node.subdirs()
    return _first_entry(subdirs[sorted(subdirs)[0]]) if subdirs else node.label


# ------------------------------------------------------------------------------------------ folder
def class_dir_digest(path: str, names: list[str], subdirs: Sequence[str] = ()) -> bytes:
    """Digest one class folder: its image names, their sizes and ``mtime_ns``, and any sub-folder names.

    ``stat`` is the cost of a folder fingerprint (~1.6 µs per file even from C on a small VM, so ~0.1 s for
    Medical MNIST); a relative ``stat`` against a directory fd at least skips re-resolving the folder path.
    """
    import hashlib
    from array import array

    if os.stat in os.supports_dir_fd:
        dir_fd = os.open(path, os.O_RDONLY)
        try:
            stats = [os.stat(name, dir_fd=dir_fd) for name in names]
        finally:
            os.close(dir_fd)
    else:  # pragma: no cover - Windows
        stats = [os.stat(os.path.join(path, name)) for name in names]
    h = hashlib.blake2b("\0".join(names).encode(), digest_size=16)
    h.update(array("q", [st.st_size for st in stats]).tobytes())
    h.update(array("q", [st.st_mtime_ns for st in stats]).tobytes())
    if subdirs:  # only in invalid layouts; folded in so that the fingerprint changes when one appears
        h.update(("/" + "\0".join(subdirs)).encode())
    return h.digest()


def scan_class_dir(path: str) -> bytes:
    """List one class folder and digest it (what :func:`list_folder` digests for a valid folder)."""
    node = _DirNode(path, "")
    return class_dir_digest(path, node.images(), sorted(node.subdirs()))


def folder_classes(path: Path) -> tuple[str, list[str], list[str]]:
    """The class root of a folder source, its sub-folder names and any stray images in it (no validation)."""
    root = find_class_root(_DirNode(str(path), ""))
    assert isinstance(root, _DirNode)
    return root.path, sorted(root.subdirs()), root.images()


def folder_digest(
    class_root: str, top: Path, classes: list[str], digests: list[bytes], stray: Sequence[str] = ()
) -> str:
    """Combine per-class digests into the folder's fingerprint."""
    import hashlib

    h = hashlib.blake2b(b"folder\0" + os.path.relpath(class_root, top).encode(), digest_size=16)
    for name, digest in zip(classes, digests, strict=True):
        h.update(b"\0" + name.encode() + b"\0" + digest)
    if stray:  # images beside the class folders: invalid, but must change the fingerprint
        h.update(("/" + "\0".join(stray)).encode())
    return h.hexdigest()


def list_folder(path: Path) -> Listing:
    """List a class-folder tree (``<root>/<class>/<image>``, optionally inside one wrapping folder)."""
    top = _DirNode(str(path), "")
    root, classes = resolve_class_root(top, str(path))
    assert isinstance(root, _DirNode)
    class_root = root.path
    per_class = [root.subdirs()[c].images() for c in classes]
    ids: list[str] = []
    paths: list[str] = []
    counts = []
    digests = []
    for name, images in zip(classes, per_class, strict=True):
        folder = os.path.join(class_root, name)
        digests.append(class_dir_digest(folder, images))
        ids.extend(f"{name}/{image}" for image in images)
        paths.extend(os.path.join(folder, image) for image in images)
        counts.append(len(images))
    labels = np.repeat(np.arange(len(classes), dtype=np.int64), counts)
    fingerprint = folder_digest(class_root, path, classes, digests)
    return Listing("folder", path, tuple(classes), ids, labels, FolderEntries(paths), fingerprint)


# --------------------------------------------------------------------------------------------- zip
def zip_digest(path: Path) -> str:
    """Hash a zip's size and central directory (every member's name, sizes and CRC-32) without parsing it.

    Reads only the end of the file, so it is cheap even for large archives; falls back to hashing the whole
    file when the end-of-central-directory records cannot be followed (e.g. data prepended to the archive).
    """
    import hashlib

    size = path.stat().st_size
    h = hashlib.blake2b(f"zip\0{size}\0".encode(), digest_size=16)
    with open(path, "rb") as f:
        tail_len = min(size, 22 + 65535)
        f.seek(size - tail_len)
        tail = f.read(tail_len)
        pos = tail.rfind(b"PK\x05\x06")
        if pos < 0 or pos + 22 > len(tail):
            raise DataError(
                f"{str(path)!r} is not a valid {path.suffix or 'zip'} archive (no zip end-of-central-directory "
                "record; truncated download?)"
            )
        cd_size, cd_end = struct.unpack_from("<L", tail, pos + 12)[0], size - tail_len + pos
        if cd_size == 0xFFFFFFFF and pos >= 20 and tail[pos - 20 : pos - 16] == b"PK\x06\x07":  # zip64
            (z64,) = struct.unpack_from("<Q", tail, pos - 12)
            f.seek(z64)
            record = f.read(56)
            if record[:4] == b"PK\x06\x06":
                cd_size, cd_end = struct.unpack_from("<Q", record, 40)[0], z64
        start = cd_end - cd_size
        f.seek(max(start, 0))
        if start < 0 or (cd_size and f.read(4) != b"PK\x01\x02"):
            logger.debug("Could not locate the central directory of %s; hashing the whole file", path)
            start = 0
        f.seek(start)
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def list_zip(path: Path) -> Listing:
    """List a zip holding a class-folder tree, in place; entries outside the layout are an error."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"cannot read {str(path)!r} as a zip file: {exc}") from exc
    top = _ZipNode("")
    for index, info in enumerate(infos):
        name = info.filename.replace("\\", "/")
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if name.startswith("/") or (len(name) > 1 and name[1] == ":") or ".." in parts:
            raise DataError(
                f"zip entry {info.filename!r} in {str(path)!r} points outside the archive's folder tree "
                "(absolute path or '..'); refusing to read this archive"
            )
        if not parts or any(is_junk(p) for p in parts):
            continue
        node = top
        for part in parts[:-1] if not info.is_dir() else parts:
            node = node.dirs.setdefault(part, _ZipNode(f"{node.label}{part}/"))
        if info.is_dir() or not is_image_name(parts[-1]):
            continue
        if info.flag_bits & 0x1:
            raise DataError(f"zip entry {info.filename!r} in {str(path)!r} is encrypted, which is not supported")
        if parts[-1] in node.files:
            raise DataError(f"zip entry {info.filename!r} appears twice in {str(path)!r}")
        node.files[parts[-1]] = index
    root, classes = resolve_class_root(top, str(path))
    assert isinstance(root, _ZipNode)
    ids: list[str] = []
    members: list[zipfile.ZipInfo] = []
    counts = []
    for name in classes:
        node = root.dirs[name]
        images = node.images()
        ids.extend(f"{name}/{image}" for image in images)
        members.extend(infos[node.files[image]] for image in images)
        counts.append(len(images))
    labels = np.repeat(np.arange(len(classes), dtype=np.int64), counts)
    return Listing("zip", path, tuple(classes), ids, labels, ZipEntries(str(path), members), zip_digest(path))


# --------------------------------------------------------------------------------------------- npz
def _npz_array(npz: np.lib.npyio.NpzFile, path: Path, key: str) -> np.ndarray:
    try:
        return np.asarray(npz[key])
    except ValueError as exc:  # allow_pickle=False refuses object arrays with a ValueError
        if "pickle" in str(exc).lower() or "object" in str(exc).lower():
            raise DataError(
                f"key {key!r} of {str(path)!r} holds a Python object array, which is not loaded "
                "(allow_pickle=False, for safety); re-save it as a plain uint8/int array"
            ) from exc
        raise DataError(f"cannot read key {key!r} of {str(path)!r}: {exc}") from exc


def _npz_split(npz: np.lib.npyio.NpzFile, path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = _npz_array(npz, path, f"{split}_images"), _npz_array(npz, path, f"{split}_labels")
    where = f"in {str(path)!r}"
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if not (images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 3)):
        raise DataError(f"key '{split}_images' {where} has shape {images.shape}; expected N×H×W or N×H×W×3")
    if images.dtype != np.uint8:
        if images.dtype.kind not in "iu" or (images.size and (images.min() < 0 or images.max() > 255)):
            raise DataError(
                f"key '{split}_images' {where} is {images.dtype}; expected uint8 pixels in 0..255 "
                "(scale and cast the array before saving)"
            )
        images = images.astype(np.uint8)
    if labels.ndim == 2 and labels.shape[1] != 1:
        raise DataError(
            f"key '{split}_labels' {where} has shape {labels.shape}: a multi-label task (one column per label), "
            "which this single-label classifier does not support; use a single-label MedMNIST set"
        )
    labels = labels[:, 0] if labels.ndim == 2 else labels
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or (labels.size and labels.min() < 0):
        raise DataError(
            f"key '{split}_labels' {where} is {labels.dtype} {labels.shape}; expected non-negative integer class "
            "indices shaped N or N×1"
        )
    if len(labels) != len(images):
        raise DataError(f"'{split}_labels' has {len(labels)} entries but '{split}_images' has {len(images)} {where}")
    return images, labels.astype(np.int64)


def read_npz(path: str | os.PathLike[str], *, channels: int = 1, image_size: int | None = None) -> ImageSet:
    """Read a MedMNIST ``.npz`` (``{train,val,test}_{images,labels}``) with its official split.

    The splits are concatenated (train, val, test) and :attr:`ImageSet.predefined` records each sample's
    split; ids are ``"train/000123"``; class names are ``"0"..."k-1"``. Loaded with ``allow_pickle=False``.
    """
    check_options(channels, image_size)
    path = Path(path)
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"cannot read {str(path)!r} as a .npz file: {exc}") from exc
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DataError(f"{str(path)!r} holds a single array, not a .npz archive of named arrays")
    with npz:
        keys = [f"{split}_{part}" for split in NPZ_SPLITS for part in ("images", "labels")]
        missing = [key for key in keys if key not in npz.files]
        if missing:
            raise DataError(
                f"{str(path)!r} lacks key(s) {', '.join(missing)}; a MedMNIST .npz holds {', '.join(keys)} "
                f"(found: {', '.join(sorted(npz.files)) or 'nothing'})"
            )
        splits = [_npz_split(npz, path, split) for split in NPZ_SPLITS]
    shapes = {split: images.shape[1:] for split, (images, _) in zip(NPZ_SPLITS, splits, strict=True)}
    if len(set(shapes.values())) > 1:
        raise DataError(f"the splits of {str(path)!r} have different image shapes {shapes}")
    images = np.concatenate([images for images, _ in splits])
    labels = np.concatenate([labels for _, labels in splits])
    if not len(images):
        raise DataError(f"{str(path)!r} holds no images: the dataset is empty")
    num_classes = int(labels.max()) + 1
    if num_classes < 2:
        raise DataError(f"{str(path)!r} has only one class (label 0); a classifier needs at least two")
    ids = [
        f"{split}/{i:06d}"
        for split, (split_images, _) in zip(NPZ_SPLITS, splits, strict=True)
        for i in range(len(split_images))
    ]
    predefined = np.repeat(
        np.array([PREDEFINED_CODES[s] for s in NPZ_SPLITS], np.int64), [len(labels) for _, labels in splits]
    )
    return ImageSet(
        images=convert_array(images, channels, image_size),
        labels=labels,
        class_names=tuple(str(i) for i in range(num_classes)),
        ids=np.array(ids),
        predefined=predefined,
        source=str(path),
        meta={"kind": "npz"},
    )


# -------------------------------------------------------------------------------------------- demo
def read_digits(*, channels: int = 1, image_size: int | None = None) -> ImageSet:
    """The bundled demo: scikit-learn's 8×8 digits (1,797 images, 10 classes), scaled from 0..16 to 0..255."""
    check_options(channels, image_size)
    from sklearn.datasets import load_digits  # heavy import, kept out of module import time

    logger.info(
        "No data source given: using scikit-learn's 8×8 digits demo. For real data pass --data.source PATH "
        "(a Medical MNIST folder or zip, or a MedMNIST .npz) or run `medmnist-lit download`."
    )
    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)
    return ImageSet(
        images=convert_array(images, channels, image_size),
        labels=digits.target.astype(np.int64),
        class_names=tuple(str(i) for i in range(10)),
        ids=np.array([f"digits/{i:04d}" for i in range(len(images))]),
        source="sklearn.datasets.load_digits (demo)",
        meta={"kind": "digits"},
    )


# ---------------------------------------------------------------------------------- folder and zip
def read_folder(
    path: str | os.PathLike[str], *, channels: int = 1, image_size: int | None = None, skip_bad: bool = False
) -> ImageSet:
    """Decode a class-folder tree into memory (one process; :func:`~medmnist_lit.cache.load_dataset` caches)."""
    return _read("folder", path, channels, image_size, skip_bad)


def read_zip(
    path: str | os.PathLike[str], *, channels: int = 1, image_size: int | None = None, skip_bad: bool = False
) -> ImageSet:
    """Decode a zip of a class-folder tree into memory, reading it in place (nothing is extracted)."""
    return _read("zip", path, channels, image_size, skip_bad)


def _read(kind: str, path: str | os.PathLike[str], channels: int, image_size: int | None, skip_bad: bool) -> ImageSet:
    check_options(channels, image_size)
    resolved = Path(path).expanduser()
    if source_kind(resolved) != kind:
        raise DataError(f"{str(resolved)!r} is not a {kind} source")
    listing = list_folder(resolved) if kind == "folder" else list_zip(resolved)
    decoded = decode_listing(listing, channels=channels, image_size=image_size, skip_bad=skip_bad, workers=1)
    keep = decoded.keep
    ids = np.array(listing.ids)
    return ImageSet(
        images=decoded.images,
        labels=listing.labels if keep is None else listing.labels[keep],
        class_names=listing.class_names,
        ids=ids if keep is None else ids[keep],
        source=str(listing.path),
        meta={"kind": listing.kind, "skipped": decoded.skipped},
    )
