"""Fetch Medical MNIST (58,954 64×64 JPEGs in 6 class folders) from its public copy on GitHub.

The archive of the original author's repository holds the images in ``<repo>-master/resized/<class>/``.
The archive is downloaded into a hidden ``.medical_mnist.partial-*`` folder and only those entries are
extracted, into ``medical_mnist/`` inside it, which is renamed into place once the download, the extraction
and the count checks have all succeeded, so a partial download never looks complete. The partial folder is
locked while its download runs (:func:`medmnist_lit.utils.processes.claim`): the next ``download`` removes those of
killed runs at once, and never one that is still running.
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

from medmnist_lit.data.layout import DataError, is_junk
from medmnist_lit.data.listing import list_folder
from medmnist_lit.utils.processes import abandoned, claim, release

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
    _remove_leftovers(root)
    if final.exists() and not force:
        problem = _problem(final, expected_classes, expected_count)
        if problem is None:
            logger.info("Medical MNIST is already in %s (use --force to download it again)", final)
            return final
        raise DataError(f"{final} exists but {problem}; pass --force true to download it again and replace it")
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{FOLDER}.partial-", dir=root))
    lock = claim(work)  # held until the end; freed by the kernel if this process is killed
    try:
        archive = work / "archive.zip"
        with open(archive, "wb") as f:
            fetch(url, f, timeout)
        partial = work / FOLDER
        partial.mkdir()  # a plain mkdir (umask), unlike mkdtemp's 0700: the finished folder is the user's
        count = _extract(archive, partial, url)
        archive.unlink()
        problem = _problem(partial, expected_classes, expected_count)
        if problem is not None:
            raise DownloadError(
                f"the archive from {url} {problem}; if it changed on purpose, pass expected_classes/expected_count "
                "(None disables a check)"
            )
        _replace(partial, final, work)
        logger.info("Extracted %d images into %s", count, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # while still locked, so no other download races the removal
        release(work, lock)
    return final


def _remove_leftovers(root: Path) -> None:
    """Remove the partial folders of downloads that are gone (killed, crashed); running ones are kept.

    Also the ``.medical_mnist.*.zip.partial`` files of older versions, once :func:`abandoned`'s age limit passed.
    """
    try:
        names = [name for name in os.listdir(root) if name.startswith(f".{FOLDER}.")]
    except OSError:
        return
    for name in names:
        path = root / name
        if name.startswith(f".{FOLDER}.trash-"):
            shutil.rmtree(path, ignore_errors=True)
        elif abandoned(path):
            logger.info("Removing %s, left behind by a download that did not finish", path)
            if path.is_dir() and not path.is_symlink():
                trash = root / f".{FOLDER}.trash-{os.getpid()}-{name}"
                try:  # renamed first: a removal cut short leaves trash, which the next run removes unasked
                    os.rename(path, trash)
                except OSError:
                    continue  # another download got there first
                shutil.rmtree(trash, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def fetch(url: str, out: BinaryIO, timeout: float, *, desc: str = FOLDER, hint: str = _HINT) -> None:
    """Stream ``url`` into ``out`` with a progress bar on a terminal's stderr; raise :class:`DownloadError` on failure.

    Args:
        url: What to download.
        out: Where the bytes go.
        timeout: Seconds to wait for the server on each network operation.
        desc: The progress bar's label.
        hint: The remedy that ends each error message.
    """
    from tqdm import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": "medmnist-lit"})
    received = 0
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with tqdm(  # disable=None: a bar on a terminal only, no frames in a log file
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=desc,
                file=sys.stderr,
                mininterval=0.5,
                disable=None,
            ) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"downloading {url} failed: HTTP {exc.code} {exc.reason}; {hint}") from exc
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        done = f" after {received:,} bytes" if received else ""
        raise DownloadError(f"downloading {url} failed{done}: {reason!r}; {hint}") from exc
    if total is not None and received != total:
        raise DownloadError(f"downloading {url} stopped after {received:,} of {total:,} bytes; {hint}")


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


def _replace(partial: Path, final: Path, work: Path) -> None:
    """Rename the finished folder into place, moving an old copy (``force``) into ``work`` to be removed."""
    if final.exists():
        os.rename(final, work / "old")
    os.rename(partial, final)
