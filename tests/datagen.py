"""Tiny synthetic data for tests: Pillow-written image class folders, zips of them, MedMNIST-style ``.npz``.

Images carry a class-dependent pattern (stripe orientation and frequency) plus per-image noise, so a small
model can learn them and no two images are accidentally identical. Everything is deterministic in ``seed``.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image

JUNK_FILES = (".DS_Store", "Thumbs.db", "README.md", "notes.txt")


def synthetic_pixels(n: int, size: int = 8, *, label: int = 0, seed: int = 0, rgb: bool = False) -> np.ndarray:
    """``n`` uint8 images (``n×size×size`` or ``n×size×size×3``) with a pattern that depends on ``label``."""
    rng = np.random.default_rng([seed, label])
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    angle = label * 0.7
    stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * (2 + label % 3) * np.pi)
    base = 128 + 80 * stripes
    images = base[None] + rng.normal(0, 20, (n, size, size))
    if rgb:
        tint = np.array([1.0, 0.8 + 0.05 * (label % 4), 0.6])
        images = images[..., None] * tint + rng.normal(0, 10, (n, size, size, 3))
    return np.clip(images, 0, 255).astype(np.uint8)


def encode(pixels: np.ndarray, fmt: str = "JPEG", quality: int = 95) -> bytes:
    """Encode one uint8 image (``H×W`` or ``H×W×3``) with Pillow."""
    buffer = io.BytesIO()
    image = Image.fromarray(pixels)
    if fmt == "JPEG":
        image.save(buffer, format=fmt, quality=quality)
    else:
        image.save(buffer, format=fmt)
    return buffer.getvalue()


def write_image(
    path: str | Path,
    pixels: np.ndarray | None = None,
    *,
    size: int | tuple[int, int] = 8,
    seed: int = 0,
    label: int = 0,
    rgb: bool = False,
) -> Path:
    """Write one image (format from the extension); random pixels of ``size`` (int or ``(w, h)``) by default."""
    path = Path(path)
    if pixels is None:
        w, h = (size, size) if isinstance(size, int) else size
        pixels = synthetic_pixels(1, max(w, h), label=label, seed=seed, rgb=rgb)[0][:h, :w]
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP"}[path.suffix.lower()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(np.ascontiguousarray(pixels), fmt))
    return path


def make_image_folder(
    root: str | Path,
    classes: Mapping[str, int] | None = None,
    *,
    size: int = 8,
    seed: int = 0,
    duplicates: int = 0,
    wrap: str | None = None,
    rgb: bool = False,
    ext: str = ".jpeg",
    junk: bool = False,
) -> Path:
    """Write a Medical-MNIST-style tree ``root/[wrap/]<class>/<000000.jpeg ...>`` and return ``root``.

    Args:
        root: Folder to create (may exist).
        classes: Images per class name (default ``{"A": 5, "B": 4}``).
        size: Image side in pixels.
        seed: Seed of the pixel noise.
        duplicates: Per class, this many extra files ``dup_<name>`` that are byte-identical copies of the
            class's first images (``dup_000000.jpeg`` copies ``000000.jpeg``, ...).
        wrap: Name of a single wrapping folder (as in archives: ``medical_mnist/AbdomenCT/...``).
        rgb: Write RGB images instead of grayscale.
        ext: File extension (``.jpeg``, ``.jpg``, ``.png``, ``.bmp``).
        junk: Also write OS/archive clutter that readers must ignore (``.DS_Store``, ``Thumbs.db``,
            ``README.md``, ``notes.txt``, ``__MACOSX/``, ``._000000.jpeg``, a hidden folder).
    """
    root = Path(root)
    classes = {"A": 5, "B": 4} if classes is None else classes
    base = root / wrap if wrap else root
    for label, (name, count) in enumerate(classes.items()):
        folder = base / name
        folder.mkdir(parents=True, exist_ok=True)
        pixels = synthetic_pixels(count, size, label=label, seed=seed, rgb=rgb)
        for i in range(count):
            write_image(folder / f"{i:06d}{ext}", pixels[i])
        for i in range(min(duplicates, count)):
            (folder / f"dup_{i:06d}{ext}").write_bytes((folder / f"{i:06d}{ext}").read_bytes())
        if junk:
            for junk_name in JUNK_FILES:
                (folder / junk_name).write_bytes(b"junk")
            (folder / f"._000000{ext}").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    if junk:
        for junk_name in JUNK_FILES:
            (base / junk_name).write_bytes(b"junk")
        (root / "__MACOSX" / (wrap or "x")).mkdir(parents=True, exist_ok=True)
        (root / "__MACOSX" / (wrap or "x") / f"._000000{ext}").write_bytes(b"junk")
        (base / ".ipynb_checkpoints").mkdir(exist_ok=True)
        (base / ".ipynb_checkpoints" / f"000000{ext}").write_bytes(b"junk")
    return root


def make_zip(
    folder: str | Path,
    zip_path: str | Path,
    *,
    prefix: str = "",
    compression: int = zipfile.ZIP_DEFLATED,
    extra: Mapping[str, bytes] | None = None,
    directories: bool = True,
) -> Path:
    """Zip every file below ``folder`` with names ``prefix + <relative posix path>``; return ``zip_path``.

    Args:
        folder: Folder to archive (its contents, not the folder itself, unless ``prefix`` names it).
        zip_path: Archive to write.
        prefix: Prepended to every entry name, e.g. ``"medical_mnist/"``.
        compression: ``zipfile.ZIP_DEFLATED`` or ``ZIP_STORED`` (or others, to test the fallback).
        extra: Raw entries added verbatim (names are not sanitised: ``"../evil.jpeg"``, ``"/abs.jpeg"``).
        directories: Also write directory entries (``"A/"``), as most zip tools do.
    """
    folder, zip_path = Path(folder), Path(zip_path)
    with zipfile.ZipFile(zip_path, "w", compression=compression) as zf:
        for path in sorted(folder.rglob("*")):
            name = prefix + path.relative_to(folder).as_posix()
            if path.is_dir():
                if directories:
                    zf.writestr(zipfile.ZipInfo(name + "/"), b"")
            else:
                zf.write(path, name)
        for name, data in (extra or {}).items():
            zf.writestr(zipfile.ZipInfo(name), data)
    return zip_path


def make_npz(
    path: str | Path,
    n_train: int = 12,
    n_val: int = 4,
    n_test: int = 4,
    num_classes: int = 3,
    size: int = 8,
    rgb: bool = False,
    *,
    seed: int = 0,
    multilabel: int = 0,
    compressed: bool = True,
    **overrides: np.ndarray,
) -> Path:
    """Write a MedMNIST-style ``.npz`` (uint8 images, uint8 labels shaped N×1) and return its path.

    Every class occurs in the training split (when ``n_train >= num_classes``). ``multilabel=k`` writes
    N×k 0/1 label matrices instead; ``overrides`` replace or add arrays by key (e.g. ``val_labels=...``).
    """
    arrays: dict[str, np.ndarray] = {}
    for offset, (split, n) in enumerate((("train", n_train), ("val", n_val), ("test", n_test))):
        labels = np.arange(n) % num_classes
        labels = np.random.default_rng([seed, offset]).permutation(labels)
        images = np.zeros((n, size, size, 3) if rgb else (n, size, size), np.uint8)
        for label in range(num_classes):
            where = np.flatnonzero(labels == label)
            images[where] = synthetic_pixels(len(where), size, label=label, seed=seed * 7 + offset, rgb=rgb)
        arrays[f"{split}_images"] = images
        if multilabel:
            arrays[f"{split}_labels"] = np.random.default_rng(seed).integers(0, 2, (n, multilabel)).astype(np.uint8)
        else:
            arrays[f"{split}_labels"] = labels.astype(np.uint8).reshape(n, 1)
    arrays.update(overrides)
    path = Path(path)
    if compressed:
        np.savez_compressed(path, **arrays)  # type: ignore[arg-type]
    else:
        np.savez(path, **arrays)  # type: ignore[arg-type]
    return path
