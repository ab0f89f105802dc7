"""The :class:`Split` value: a test part and (train, val) folds of a dev part, saved and loaded as ``split.npz``.

A split is plain index arrays (sorted, read-only) plus the options that made it; :mod:`.strategies` builds it.
Errors are :class:`SplitError`: one line with what is wrong and, where known, the remedies that work.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import operator
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medmnist_lit.utils.files import atomic_path

log = logging.getLogger(__name__)

__all__ = ["EMPTY_INDEX", "STRATEGIES", "Codes", "Fix", "Split", "SplitError", "as_index"]

STRATEGIES = ("holdout", "kfold", "loo", "group_kfold", "logo", "predefined")

Codes = np.ndarray | None
_FORMAT = 1
EMPTY_INDEX = np.zeros(0, dtype=np.int64)
EMPTY_INDEX.flags.writeable = False


#: A remedy: its text (``use --data.folds 3``) and the :func:`make_split` arguments it changes, which
#: :func:`make_split` tries before suggesting it (``_drop_class`` removes that class's samples; None: not checkable).
Fix = tuple[str, dict[str, Any] | None]


class SplitError(ValueError):
    """An invalid split request or split file; the message says what to do instead.

    Attributes:
        problem: What is wrong, without the remedies.
        fixes: Remedies that :func:`make_split` checks by trying them, so only those that work are suggested
            (None: the message states its own remedy).
    """

    def __init__(self, problem: str, fixes: Sequence[Fix] | None = None) -> None:
        self.problem, self.fixes = problem, None if fixes is None else tuple(fixes)
        super().__init__(problem if self.fixes is None else _with_fixes(problem, [text for text, _ in self.fixes]))


def _with_fixes(problem: str, texts: Sequence[str]) -> str:
    if not texts:
        return f"{problem}; no change of the split options fixes it for this data: use more data"
    return f"{problem}; {' or '.join(texts) if len(texts) < 3 else ', '.join(texts[:-1]) + ', or ' + texts[-1]}"


def as_index(values: Any) -> np.ndarray:
    """Sorted, read-only int64 copy (a split is shared by every consumer, so guard against mutation)."""
    out = np.sort(np.asarray(values, dtype=np.int64).ravel())
    out.flags.writeable = False
    return out


def _ids_digest(ids: np.ndarray) -> str:
    """SHA-256 of the ids in order, independent of their array dtype (str, object or int)."""
    return hashlib.sha256("".join(f"{value}\0" for value in np.asarray(ids).tolist()).encode()).hexdigest()


def _pack(parts: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate ragged index arrays; return them with ``len(parts) + 1`` offsets."""
    offsets = np.cumsum([0, *(len(p) for p in parts)]).astype(np.int64)
    return (np.concatenate(parts).astype(np.int64) if parts else EMPTY_INDEX), offsets


def _unpack(flat: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, ...]:
    return tuple(as_index(flat[a:b]) for a, b in itertools.pairwise(offsets))


@dataclass(frozen=True, eq=False)
class Split:
    """Index sets of one split: a held-out test set and per-fold (train, val) parts of the dev set.

    Attributes:
        strategy: One of :data:`STRATEGIES`.
        n_samples: Size of the dataset the indices refer to.
        test: Sorted held-out test indices (never in any fold).
        dev: Sorted non-test indices.
        val: Per fold, sorted validation indices (a subset of ``dev``).
        excluded: Per fold, dev indices left out of training by ``train_fraction`` (empty when 1.0).
        seed: Seed that produced the split.
        params: JSON-serialisable options that produced it; options a strategy ignores are ``None``.
    """

    strategy: str
    n_samples: int
    test: np.ndarray
    dev: np.ndarray
    val: tuple[np.ndarray, ...]
    excluded: tuple[np.ndarray, ...]
    seed: int
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def n_folds(self) -> int:
        """Number of (train, val) folds."""
        return len(self.val)

    def _check_fold(self, fold: int) -> int:
        fold = operator.index(fold)
        if not 0 <= fold < self.n_folds:
            last = self.n_folds - 1
            raise SplitError(f"fold {fold} is out of range for this {self.strategy} split; use 0..{last}")
        return fold

    def train(self, fold: int) -> np.ndarray:
        """Sorted training indices of ``fold``: dev minus its val and excluded indices."""
        fold = self._check_fold(fold)
        held = np.concatenate([self.val[fold], self.excluded[fold]])
        return np.setdiff1d(self.dev, held, assume_unique=True)  # keeps dev's sorted order

    def fold(self, fold: int) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(train, val)`` indices of ``fold``."""
        return self.train(fold), self.val[self._check_fold(fold)]

    def save(self, path: str | os.PathLike[str], *, ids: np.ndarray | None = None) -> None:
        """Write the split atomically to one pickle-free ``.npz`` (parent directories are created).

        Args:
            path: Destination file.
            ids: Sample ids of the dataset; their SHA-256 lets :meth:`load` detect a different dataset.
        """
        path = Path(path)
        if ids is not None and len(ids) != self.n_samples:
            raise SplitError(f"got {len(ids)} ids for a split of {self.n_samples} samples; pass the dataset's")
        meta = {k: getattr(self, k) for k in ("strategy", "n_samples", "seed", "params")}
        meta.update(format=_FORMAT, ids_sha256=None if ids is None else _ids_digest(ids))
        arrays = {"test": self.test, "dev": self.dev, "meta": np.array(json.dumps(meta))}
        for name in ("val", "excluded"):
            arrays[name], arrays[f"{name}_offsets"] = _pack(getattr(self, name))
        # a handle, not a name: np.savez would append .npz to a name without it
        with atomic_path(path) as tmp, tmp.open("wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]  # numpy's stub mistypes **kwds

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], *, n_samples: int | None = None, ids: np.ndarray | None = None
    ) -> Split:
        """Read a split written by :meth:`save`, checking it belongs to the given dataset.

        Args:
            path: File written by :meth:`save`.
            n_samples: Expected dataset size.
            ids: Expected sample ids (compared by digest when the file stores one).

        Raises:
            SplitError: The file is not a split file, or it was made for a different dataset.
        """
        path = Path(path)
        again = "pass --data.split_file the split.npz of an earlier cv run, or leave it out to make a new split"
        if not path.exists():
            raise SplitError(f"split file {path} does not exist; {again}")
        if path.is_dir():
            raise SplitError(f"split file {path} is a folder, not a file; {again}")
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(data["meta"].item())
                arr = {k: np.asarray(data[k], dtype=np.int64) for k in data.files if k != "meta"}
            val, excluded = (_unpack(arr[k], arr[f"{k}_offsets"]) for k in ("val", "excluded"))
            test, dev, n, seed = (
                as_index(arr["test"]),
                as_index(arr["dev"]),
                int(meta["n_samples"]),
                int(meta["seed"]),
            )
            split = cls(meta["strategy"], n, test, dev, val, excluded, seed, meta["params"])
        except PermissionError:
            raise SplitError(f"split file {path} is not readable (permission denied); make it readable") from None
        except (KeyError, ValueError, TypeError, EOFError, OSError, zipfile.BadZipFile) as exc:
            why = " ".join(str(exc).split()) or type(exc).__name__
            raise SplitError(f"{path} is not a split file written by Split.save ({why}); {again}") from exc
        other = f"{path} was made for a different dataset"
        fix = "delete it to make a new split, or point to this dataset's split file"
        if n_samples is not None and n_samples != n:
            raise SplitError(f"{other}: it covers {n} samples but the dataset has {n_samples}; {fix}")
        if ids is not None:
            if len(ids) != n:
                raise SplitError(f"{other}: it covers {n} samples but the dataset has {len(ids)} ids; {fix}")
            if meta.get("ids_sha256") is None:
                log.warning("%s stores no ids digest; cannot verify it belongs to this dataset", path)
            elif meta["ids_sha256"] != _ids_digest(ids):
                raise SplitError(f"{other}: same size but different sample ids (or order); {fix}")
        every = np.concatenate([test, dev, *val, *excluded])
        if every.size and (every.min() < 0 or every.max() >= n):
            raise SplitError(f"{path} holds indices outside [0, {n}); the file is corrupt")
        return split
