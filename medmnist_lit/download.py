"""Fetch Medical MNIST (58,954 64×64 JPEGs in 6 class folders) from its public copy on GitHub.

The archive of the original author's repository holds the images in ``<repo>-master/resized/<class>/``.
Only those entries are extracted, into a hidden ``.medical_mnist.partial-*`` folder that is renamed to
``medical_mnist/`` once the download, the extraction and the count checks have all succeeded, so a
partial download never looks complete.
"""

from __future__ import annotations

import http.client
import io
import logging
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import BinaryIO

from medmnist_lit.sources import DataError, is_junk, list_folder

logger = logging.getLogger(__name__)

DEFAULT_URL = "https://github.com/apolanco3225/Medical-MNIST-Classification/archive/refs/heads/master.zip"
#: Name of the dataset folder created under ``root``.
FOLDER = "medical_mnist"
_HINT = (
    "check your connection or --url; alternatively download medical_mnist.zip from Kaggle "
    "(https://www.kaggle.com/datasets/andrewmvd/medical-mnist) and pass it as --data.source (read in place)"
)


class DownloadError(DataError):
    """The download failed (network, HTTP status, truncated or malformed archive)."""


def download(
    root: str | os.PathLike[str] = "data",
    url: str = DEFAULT_URL,
    *,
    expected_classes: int | None = 6,
    expected_count: int | None = 58954,
    force: bool = False,
    timeout: float = 60.0,
) -> Path:
    """Download and extract Medical MNIST into ``<root>/medical_mnist/`` and return that path.

    Args:
        root: Folder that will hold ``medical_mnist/``.
        url: A zip whose ``*/resized/`` folder holds one sub-folder of images per class.
        expected_classes: Required number of classes (``None``: no check).
        expected_count: Required number of images (``None``: no check).
        force: Download again even when a complete copy exists (it is replaced only after success).
        timeout: Seconds to wait for the server on each network operation.

    Raises:
        DownloadError: The download failed or the archive is not what was expected; nothing is left behind.
        DataError: An existing ``medical_mnist/`` is incomplete (pass ``force=True`` to replace it).
    """
    root = Path(root).expanduser()
    final = root / FOLDER
    if final.exists() and not force:
        problem = _problem(final, expected_classes, expected_count)
        if problem is None:
            logger.info("Medical MNIST is already in %s (use --force to download it again)", final)
            return final
        raise DataError(f"{final} exists but {problem}; pass --force true to download it again and replace it")
    root.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{FOLDER}.", suffix=".zip.partial", dir=root)
    archive = Path(name)
    partial: Path | None = None
    try:
        with os.fdopen(fd, "wb") as f:
            _fetch(url, f, timeout)
        partial = Path(tempfile.mkdtemp(prefix=f".{FOLDER}.partial-", dir=root))
        count = _extract(archive, partial, url)
        archive.unlink()
        problem = _problem(partial, expected_classes, expected_count)
        if problem is not None:
            raise DownloadError(
                f"the archive from {url} {problem}; if it changed on purpose, pass expected_classes/expected_count "
                "(None disables a check)"
            )
        _replace(partial, final)
        partial = None
        logger.info("Extracted %d images into %s", count, final)
    finally:
        archive.unlink(missing_ok=True)
        if partial is not None:
            shutil.rmtree(partial, ignore_errors=True)
    return final


def _fetch(url: str, out: BinaryIO, timeout: float) -> None:
    """Stream ``url`` into ``out`` with a progress bar on stderr; raise :class:`DownloadError` on failure."""
    from tqdm import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": "medmnist-lit"})
    received = 0
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with tqdm(
                total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=FOLDER, file=sys.stderr, mininterval=0.5
            ) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"downloading {url} failed: HTTP {exc.code} {exc.reason}; {_HINT}") from exc
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        done = f" after {received:,} bytes" if received else ""
        raise DownloadError(f"downloading {url} failed{done}: {reason!r}; {_HINT}") from exc
    if total is not None and received != total:
        raise DownloadError(f"downloading {url} stopped after {received:,} of {total:,} bytes; {_HINT}")


def _extract(archive: Path, dest: Path, url: str) -> int:
    """Extract the entries below ``*/resized/`` into ``dest``; returns the number of files written."""
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        raise DownloadError(f"the file downloaded from {url} is not a valid zip archive ({exc}); {_HINT}") from exc
    count = 0
    with zf:
        for info in zf.infolist():
            parts = info.filename.replace("\\", "/").split("/")
            if len(parts) < 3 or parts[1] != "resized":
                continue
            rel = [p for p in parts[2:] if p not in ("", ".")]
            if info.filename.startswith("/") or ":" in parts[0] or ".." in parts:
                raise DownloadError(f"unsafe entry {info.filename!r} in the archive from {url}; refusing to extract it")
            if not rel or any(is_junk(p) for p in rel):
                continue
            target = dest.joinpath(*rel)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
            count += 1
    if not count:
        raise DownloadError(f"the archive from {url} has no '*/resized/' folder of images; {_HINT}")
    return count


def _problem(folder: Path, expected_classes: int | None, expected_count: int | None) -> str | None:
    """Why ``folder`` is not a complete copy (``None`` if it is)."""
    from PIL import Image, UnidentifiedImageError

    try:
        listing = list_folder(folder)
        first = listing.reader.read(0)
    except (DataError, OSError) as exc:
        return f"is not a class-folder dataset ({exc})"
    try:  # one cheap look, e.g. against Git LFS pointer files in place of the images
        Image.open(io.BytesIO(first)).verify()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        return f"holds files that are not images (e.g. {listing.ids[0]}: {first[:40]!r}, {exc})"
    problems = []
    if expected_classes is not None and len(listing.class_names) != expected_classes:
        problems.append(
            f"has {len(listing.class_names)} classes ({', '.join(listing.class_names)}), expected {expected_classes}"
        )
    if expected_count is not None and len(listing) != expected_count:
        problems.append(f"has {len(listing):,} images, expected {expected_count:,}")
    return " and ".join(problems) or None


def _replace(partial: Path, final: Path) -> None:
    """Rename the finished folder into place, moving an old copy aside first (``force``)."""
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{FOLDER}.old-", dir=final.parent))
        os.rename(final, old / FOLDER)
        os.rename(partial, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(partial, final)
