"""``medmnist:NAME`` sources: a 2D MedMNIST dataset by name, located in the MedMNIST root or downloaded there.

The ``medmnist`` package is the reference for every fact used here: its ``INFO`` gives the names, URLs, MD5 sums,
tasks and label names, its ``MedMNIST2D`` the 2D datasets and their sizes (28, 64, 128, 224). ``--data.image_size``
picks the published file of that size (``<flag>.npz`` at 28, ``<flag>_<size>.npz`` otherwise, as the package
names them), so the images are the published ones, never resized copies; other sizes are refused.

The file lives in ``$MEDMNIST_ROOT`` if set, else the package's ``DEFAULT_ROOT`` (``~/.medmnist``), so files the
``medmnist`` package downloaded are reused. A missing file is downloaded from ``INFO``'s URL (or from
``$MEDMNIST_LIT_BASE_URL/<file>``, a mirror) into a locked hidden folder in the root, its MD5 checked while it
streams, and renamed into place only when it matches; the file is then read in place like any ``.npz``.

``medmnist`` (which imports torch) and the download code are imported on first use only: other sources never pay
for them.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from medmnist_lit.data.imageset import ImageSet
from medmnist_lit.data.layout import DataError
from medmnist_lit.data.tasks import TaskKind
from medmnist_lit.utils.processes import abandoned, claim, release

__all__ = [
    "BASE_URL_ENV",
    "PREFIX",
    "ROOT_ENV",
    "MedMNISTFile",
    "datasets_2d",
    "is_medmnist",
    "locate",
    "medmnist_root",
]

logger = logging.getLogger(__name__)

#: What a ``--data.source`` naming a MedMNIST dataset starts with (``medmnist:pneumoniamnist``).
PREFIX = "medmnist:"
#: Environment variable naming the folder of MedMNIST ``.npz`` files (default: the package's ``~/.medmnist``).
ROOT_ENV = "MEDMNIST_ROOT"
#: Environment variable naming a mirror: files are fetched from ``<base>/<flag>[_<size>].npz`` instead of Zenodo.
BASE_URL_ENV = "MEDMNIST_LIT_BASE_URL"
_SIZE = 28  # the package's default size (file name without a size suffix)


def is_medmnist(source: object) -> bool:
    """Whether ``source`` names a MedMNIST dataset (``medmnist:NAME``) rather than a path."""
    return isinstance(source, str) and source.lower().startswith(PREFIX)


def datasets_2d() -> dict[str, dict[str, Any]]:
    """``medmnist.INFO``'s entries of the 2D datasets (classes deriving from ``MedMNIST2D``), by flag."""
    import medmnist
    from medmnist.dataset import MedMNIST2D

    return {
        flag: info
        for flag, info in medmnist.INFO.items()
        if issubclass(getattr(medmnist.dataset, info["python_class"], object), MedMNIST2D)
    }


def medmnist_root() -> Path:
    """``$MEDMNIST_ROOT`` if set, else the ``medmnist`` package's ``DEFAULT_ROOT`` (``~/.medmnist``)."""
    env = os.environ.get(ROOT_ENV)
    if env:
        return Path(env).expanduser()
    from medmnist.info import DEFAULT_ROOT

    return Path(DEFAULT_ROOT) if DEFAULT_ROOT else Path("~/.medmnist").expanduser()


@dataclass(frozen=True)
class MedMNISTFile:
    """One published file of a 2D MedMNIST dataset.

    Attributes:
        flag: The dataset's key in ``medmnist.INFO`` (``"pneumoniamnist"``).
        size: Image side in pixels (28, 64, 128 or 224).
        path: Where the file is (or will be, once downloaded).
        url: Where it is downloaded from.
        md5: Its MD5 sum, from ``INFO``.
        info: The dataset's ``INFO`` entry (task, label names, sample counts...).
    """

    flag: str
    size: int
    path: Path
    url: str
    md5: str
    info: dict[str, Any]

    @property
    def class_names(self) -> tuple[str, ...]:
        """``INFO``'s label names, in label order."""
        labels = self.info["label"]
        return tuple(str(labels[key]) for key in sorted(labels, key=int))

    def download(self, timeout: float = 60.0) -> Path:
        """Download the file into :attr:`path` unless it is there; returns :attr:`path`.

        Raises:
            DownloadError: The download failed or its MD5 is not ``INFO``'s; nothing is left behind.
        """
        if self.path.is_file():
            return self.path
        from medmnist_lit.data.download import DownloadError, fetch  # urllib, http, ssl: only when downloading

        root = self.path.parent
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(f"cannot create the MedMNIST root {str(root)!r} ({exc}); set ${ROOT_ENV}") from exc
        _remove_leftovers(root, self.path.name)
        work = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.partial-", dir=root))
        lock = claim(work)  # held until the end; freed by the kernel if this process is killed
        try:
            partial = work / self.path.name  # created with the umask's mode, unlike mkstemp's 0600
            logger.info("Downloading %s from %s into %s (MD5 checked)", self.path.name, self.url, root)
            with open(partial, "wb") as raw:
                out = _Hashing(raw)
                fetch(self.url, out, timeout, desc=self.path.name, hint=self._hint())  # type: ignore[arg-type]
            if out.md5.hexdigest() != self.md5:
                where = f"${BASE_URL_ENV} serves" if os.environ.get(BASE_URL_ENV) else "the server served"
                raise DownloadError(
                    f"the file downloaded from {self.url} has MD5 {out.md5.hexdigest()}, but medmnist.INFO gives "
                    f"{self.md5} for {self.path.name}, so it was not kept: {where} another file (or a newer "
                    f"medmnist release); download {self._published} yourself into {self.path}"
                )
            os.replace(partial, self.path)
        finally:
            shutil.rmtree(work, ignore_errors=True)  # while still locked, so no other download races the removal
            release(work, lock)
        return self.path

    def label(self, data: ImageSet) -> ImageSet:
        """``data`` (read from :attr:`path`) with ``INFO``'s class names and the dataset in ``meta["medmnist"]``.

        Raises:
            DataError: The file's labels do not match ``INFO``'s task or classes (not the published file).
        """
        names = self.class_names
        kind = TaskKind.parse(self.info["task"])
        if (kind is TaskKind.MULTILABEL) != data.multilabel:
            held = "0/1 labels shaped N×L (multi-label)" if data.multilabel else "one class per image (N or N×1 labels)"
            raise DataError(
                f"{self.path} holds {held}, but medmnist.INFO gives {self.flag} the task {kind.value!r}: it is not the "
                "published file; delete it to download it again"
            )
        if len(data.class_names) != len(names):
            raise DataError(
                f"{self.path} has labels 0..{len(data.class_names) - 1}, but medmnist.INFO lists {len(names)} classes "
                f"for {self.flag}: it is not the published file; delete it to download it again"
            )
        meta = {**data.meta, "medmnist": {"flag": self.flag, "size": self.size, "task": self.info["task"]}}
        return replace(data, class_names=names, meta=meta, task_kind=kind)

    @property
    def _published(self) -> str:
        """``INFO``'s URL of the file (:attr:`url` may be a mirror's)."""
        return str(self.info["url" if self.size == _SIZE else f"url_{self.size}"])

    def _hint(self) -> str:
        return (
            f"check your connection or ${BASE_URL_ENV}, or download {self._published} yourself into {self.path} "
            f"(MD5 {self.md5})"
        )


def locate(source: str, image_size: int | None) -> MedMNISTFile:
    """The file that ``source`` (``medmnist:NAME``, any case) names at ``image_size`` (``None``: 28), unread.

    Raises:
        DataError: An unknown or 3D name, or a size MedMNIST does not publish; one line listing the valid ones.
    """
    name = source[len(PREFIX) :].strip().lower()
    known = datasets_2d()
    if name not in known:
        import medmnist

        valid = ", ".join(sorted(known))
        if name in medmnist.INFO:
            raise DataError(f"--data.source {source}: {name} is a 3D MedMNIST dataset, not read here; 2D ones: {valid}")
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.5)
        guess = f"did you mean medmnist:{close[0]}? " if close else ""
        raise DataError(f"--data.source {source}: no such 2D MedMNIST dataset; {guess}valid names: {valid}")
    from medmnist.dataset import MedMNIST2D

    size = _SIZE if image_size is None else image_size
    if size not in MedMNIST2D.available_sizes:
        sizes = ", ".join(str(s) for s in MedMNIST2D.available_sizes)
        raise DataError(
            f"--data.image_size {image_size}: MedMNIST publishes {name} at {sizes} pixels only; pick one of them "
            "(or omit it for 28)"
        )
    info = known[name]
    suffix = "" if size == _SIZE else f"_{size}"  # the package's naming: pathmnist.npz, pathmnist_64.npz, ...
    filename = f"{name}{suffix}.npz"
    base = os.environ.get(BASE_URL_ENV)
    url = f"{base.rstrip('/')}/{filename}" if base else str(info[f"url{suffix}"])
    return MedMNISTFile(name, size, medmnist_root() / filename, url, str(info[f"MD5{suffix}"]), info)


class _Hashing:
    """A binary file that also feeds what is written to an MD5 (checked without reading the file again)."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.md5 = hashlib.md5(usedforsecurity=False)

    def write(self, data: bytes) -> int:
        self.md5.update(data)
        return int(self.raw.write(data))


def _remove_leftovers(root: Path, filename: str) -> None:
    """Remove the partial folders of downloads of ``filename`` that are gone (killed); running ones are kept."""
    try:
        names = [name for name in os.listdir(root) if name.startswith(f".{filename}.partial-")]
    except OSError:
        return
    for name in names:
        if abandoned(root / name):
            logger.info("Removing %s, left behind by a download that did not finish", root / name)
            shutil.rmtree(root / name, ignore_errors=True)
