"""The LightningDataModule: a source decoded once, split by any strategy, batches served from memory."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from torch import Tensor

from medmnist_lit.data.cache import load_dataset
from medmnist_lit.data.external import load_external
from medmnist_lit.data.fold import Fold, PixelStats, fold_loader, fold_statistics, pixel_transform, split_fold
from medmnist_lit.data.grouping import GroupBy, with_groups
from medmnist_lit.data.imageset import ImageSet
from medmnist_lit.data.loaders import BatchLoader, EpochSampler, PixelTransform
from medmnist_lit.data.medmnist_source import is_medmnist, locate
from medmnist_lit.data.provenance import DataProvenance, fingerprint_of, pending_record, split_digest
from medmnist_lit.data.tasks import Task
from medmnist_lit.splits.balance import UNBALANCED_POINTS, class_balance, describe_balance
from medmnist_lit.splits.split import Split
from medmnist_lit.splits.strategies import make_split, stratified_subset
from medmnist_lit.utils.checkpoints import WeightsOnlyLoading
from medmnist_lit.utils.memory import return_large_blocks

log = logging.getLogger(__name__)

#: Logged when a split is made with ``data.group_by none``.
NO_GROUPING_WARNING = (
    "data.group_by none: near-duplicate images may sit on both sides of the split; their *_without_twin scores "
    "show how much that inflates the result"
)

SplitName = Literal["holdout", "kfold", "loo", "group_kfold", "logo", "predefined"]


def _absolute(path: str | None) -> str | None:
    if path is None or is_medmnist(path):  # a name (medmnist:NAME) is the same wherever the run starts
        return path
    return os.path.abspath(os.path.expanduser(path))


class MedMNISTDataModule(WeightsOnlyLoading, L.LightningDataModule):  # type: ignore[misc]  # weights-only loader
    """Medical MNIST, MedMNIST or the bundled demo, split for hold-out, k-fold, LOO or grouped validation.

    The source is decoded once into a cache and memory-mapped (see :func:`medmnist_lit.data.cache.load_dataset`);
    batches are index slices of in-memory tensors (see :mod:`medmnist_lit.data.loaders`).

    Args:
        source: Image folder (one sub-folder per class), ``.zip`` of one, MedMNIST ``.npz``, ``medmnist:NAME`` (a
            2D MedMNIST dataset, downloaded into ``$MEDMNIST_ROOT`` or ``~/.medmnist`` when missing), or ``None``
            for the bundled scikit-learn digits demo.
        channels: 1 converts to grayscale, 3 to RGB.
        image_size: Resize every image to ``image_size×image_size``; ``None`` keeps the size (all must match).
            With ``medmnist:NAME``: the published size to read (28, 64, 128 or 224; ``None``: 28).
        cache_dir: Where decoded arrays are cached (default: the user cache dir or ``$MEDMNIST_LIT_CACHE``).
        skip_bad: Skip unreadable images (and report them) instead of stopping.
        split: Validation strategy: ``holdout``, ``kfold``, ``loo``, ``group_kfold``, ``logo`` or ``predefined``.
        fold: Which fold ``fit`` trains on (0-based).
        folds: Number of folds for ``kfold`` and ``group_kfold``.
        repeats: Repeats of ``kfold`` with different shuffles.
        test_fraction: Share of the data held out as the test set before any fold is made.
        val_fraction: Share of the data used for validation by ``holdout``.
        train_fraction: Share of each fold's training part actually used (learning curves).
        stratify: Keep class proportions in every part.
        groups: CSV mapping sample id to a group (subject, patient); groups are never split.
        group_by: Also keep near-duplicate clusters (``near_duplicates``, the default) or exact copies
            (``duplicates``) on one side of every split; ``none`` (or null) opts out, with a warning. Not applied
            to the official split (``predefined``), which is never changed.
        subset: Use a stratified, seeded subsample of this many images (e.g. for leave-one-out).
        split_file: Load a saved split (``split.npz`` of an earlier run) instead of making one.
        seed: Seed of the split and of the batch order.
        batch_size: Mini-batch size; ``"full"`` for full-batch gradient descent, 1 for online learning.
        eval_batch_size: Batch size for validation, test and prediction (no effect on results).
        sampling: ``shuffle`` (without replacement), ``replacement`` or ``balanced`` (class-balanced, with
            replacement; single-label tasks only).
        drop_last: Drop the last, smaller training batch of each epoch.
        standardize: Standardise pixels with the mean and std of the training part only.
        test_source: A second dataset with the same class names (matched by name) on which every trained model
            is also scored, reported as ``external/…`` ("train in source 1, use in source 2").

    The loaders serve one fold, a :class:`~medmnist_lit.data.fold.Fold` value: fold ``fold`` of the split, or the
    one given to :meth:`with_fold` (cross-validation makes its folds with :meth:`make_fold` and :meth:`refit_fold`
    and hands each to the code that trains it). Nothing else changes what a DataModule serves.

    Paths are made absolute (also in the hyperparameters). Checkpoints hold :meth:`state_dict`, a
    :class:`~medmnist_lit.data.provenance.DataProvenance`: a DataModule restored from one knows the classes, image
    shape and pixel statistics without its data, and checks the data it loads is the same.
    """

    def __init__(
        self,
        source: str | None = None,
        *,
        channels: Literal[1, 3] = 1,
        image_size: int | None = None,
        cache_dir: str | None = None,
        skip_bad: bool = False,
        split: SplitName = "holdout",
        fold: int = 0,
        folds: int = 5,
        repeats: int = 1,
        test_fraction: float = 0.2,
        val_fraction: float = 0.2,
        train_fraction: float = 1.0,
        stratify: bool = True,
        groups: str | None = None,
        group_by: GroupBy | None = "near_duplicates",
        subset: int | None = None,
        split_file: str | None = None,
        seed: int = 0,
        batch_size: int | Literal["full"] = 64,
        eval_batch_size: int = 1024,
        sampling: Literal["shuffle", "replacement", "balanced"] = "shuffle",
        drop_last: bool = False,
        standardize: bool = False,
        test_source: str | None = None,
    ) -> None:
        super().__init__()
        # absolute, also in the hyperparameters (so in checkpoints): they must not depend on the working directory
        paths = {"source": source, "test_source": test_source, "cache_dir": cache_dir, "groups": groups}
        paths = {key: _absolute(path) for key, path in {**paths, "split_file": split_file}.items()}
        self.save_hyperparameters()
        self.hparams.update(paths)
        source, test_source, cache_dir, groups, split_file = paths.values()
        if batch_size != "full" and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"data.batch_size must be a positive integer or 'full', got {batch_size!r}")
        if eval_batch_size < 1:
            raise ValueError(f"data.eval_batch_size must be positive, got {eval_batch_size}")
        if subset is not None and subset < 2:
            raise ValueError(f"data.subset must be at least 2 images, got {subset}")
        self.source = source
        self.channels = channels
        self.image_size = image_size
        self.cache_dir = cache_dir
        self.skip_bad = skip_bad
        self.strategy = split
        self.fold = fold
        self.folds = folds
        self.repeats = repeats
        self.test_fraction = test_fraction
        self.val_fraction = val_fraction
        self.train_fraction = train_fraction
        self.stratify = stratify
        self.groups = groups
        self.group_by = group_by
        self.subset = subset
        self.split_file = split_file
        self.seed = seed
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.sampling = sampling
        self.drop_last = drop_last
        self.standardize = standardize
        self.test_source = test_source
        self._tensors: dict[tuple[str, torch.device], tuple[Tensor, Tensor]] = {}
        self._transforms: dict[int | None, PixelTransform] = {}
        self._stats: dict[int | None, PixelStats | None] = {}
        self._digests: dict[str, Any] = {}
        self._fold: Fold | None = None  # set once: by with_fold, or on first use from data.fold
        #: The data record of the checkpoint this DataModule was restored from (``None``: not restored).
        self.restored: DataProvenance | None = None
        if (state := pending_record()) is not None:  # made inside provenance.restoring(...)
            self.load_state_dict(dict(state))

    @classmethod
    def around(
        cls,
        dataset: ImageSet,
        hparams: dict[str, Any],
        *,
        split: Split | None = None,
        external: ImageSet | None = None,
        fingerprint: str | None = None,
    ) -> MedMNISTDataModule:
        """A DataModule with the options ``hparams`` serving an already-loaded dataset: nothing is decoded again.

        What another process (a Ray worker) uses to serve the data a first one loaded.

        Args:
            dataset: What :attr:`dataset` of a DataModule with these options holds (subsampled, groups attached).
            hparams: Constructor arguments (another DataModule's ``hparams``).
            split: Its :attr:`split` (made again from ``dataset`` when ``None``).
            external: Its :attr:`external` dataset, when ``test_source`` is set.
            fingerprint: Its source's :attr:`fingerprint` (computed again, a stat of every file, when ``None``).
        """
        module = cls(**{k: v for k, v in hparams.items() if not k.startswith("_")})
        module._check_task(dataset)
        module.__dict__["dataset"] = dataset  # cached properties: set, never computed
        if split is not None:
            module.__dict__["split"] = split
        if external is not None:
            module.__dict__["external"] = external
        if fingerprint is not None:
            module._digests["fingerprint"] = fingerprint
        return module

    # ----------------------------------------------------------------------------------------- data
    @cached_property
    def dataset(self) -> ImageSet:
        """The (optionally subsampled) dataset, with group codes attached; loaded on first use."""
        if self.restored is not None and not is_medmnist(self.source):  # a name is downloaded again if gone
            self.restored.require_source(self.source)
        data = load_dataset(
            self.source,
            channels=self.channels,
            image_size=self.image_size,
            cache_dir=self.cache_dir,
            skip_bad=self.skip_bad,
        )
        self._check_task(data)
        if self.subset is not None and self.subset < len(data):
            data = data.take(stratified_subset(data.labels, self.subset, seed=self.seed, class_names=data.class_names))
        if self.restored is not None:
            self.restored.check_data(data, self.source, self.fingerprint)
        group_by = self.group_by
        if self.strategy == "predefined" and group_by not in (None, "none"):
            log.info("data.split predefined: the official split is used as it is, without data.group_by %s; its "
                     "*_without_twin scores show how much it leaks", group_by)  # fmt: skip
            group_by = None
        return with_groups(data, self.groups, group_by)

    def _check_task(self, data: ImageSet) -> None:
        """Refuse options that cannot work for ``data``'s task, before anything is split or trained."""
        task = data.task
        if self.sampling == "balanced" and task.multilabel:
            raise ValueError(
                f"--data.sampling balanced draws each class equally often, but {data.source or 'the data'} is a "
                f"{task.kind.value} task ({task.num_outputs} labels, a sample may have several or none), which has "
                "no classes to balance: use --data.sampling shuffle (or replacement)"
            )

    @property
    def fingerprint(self) -> str | None:
        """The source's fingerprint (see :mod:`~medmnist_lit.data.fingerprint`); ``None`` for the digits demo."""
        if "fingerprint" not in self._digests:  # once for all DataModules of with_fold: a stat of every file
            source = self.source
            if is_medmnist(source):  # the file it names (loaded, so there) at this image size
                source = str(locate(str(source), self.image_size).path)
            self._digests["fingerprint"] = fingerprint_of(source)
        return self._digests["fingerprint"]

    @property
    def split_digest(self) -> str:
        """:func:`~medmnist_lit.data.provenance.split_digest` of :attr:`split`: the split's identity."""
        if "split" not in self._digests:
            self._digests["split"] = split_digest(self.split, self.dataset.ids)
        return self._digests["split"]

    @property
    def num_classes(self) -> int:
        """Number of classes of the source (of the checkpoint, when restored from one)."""
        return len(self.class_names)

    @property
    def task(self) -> Task:
        """The task of the data (of the checkpoint, when restored from one: the data is checked to match).

        See :attr:`ImageSet.task <medmnist_lit.data.imageset.ImageSet.task>`.
        """
        restored = self.restored
        return restored.task if restored is not None else self.dataset.task

    @property
    def class_names(self) -> list[str]:
        """Class names in label order (of the checkpoint, when restored from one: the data is checked to match)."""
        restored = self.restored
        return list(restored.class_names if restored is not None else self.dataset.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Channels-first shape of one image (of the checkpoint, when restored from one)."""
        return self.restored.input_shape if self.restored is not None else self.dataset.input_shape

    @cached_property
    def split(self) -> Split:
        """The split of :attr:`dataset` (made from the options, or loaded from ``split_file``)."""
        data = self.dataset
        if self.split_file is not None:
            split = Split.load(self.split_file, n_samples=len(data), ids=data.ids)
        else:
            split = make_split(
                data.labels,
                strategy=self.strategy,
                test_fraction=self.test_fraction,
                val_fraction=self.val_fraction,
                folds=self.folds,
                repeats=self.repeats,
                stratify=self.stratify,
                groups=data.groups,
                predefined=data.predefined,
                train_fraction=self.train_fraction,
                seed=self.seed,
                class_names=data.class_names,
            )
            if self.group_by in (None, "none") and self.strategy != "predefined":
                log.warning(NO_GROUPING_WARNING)
        if split.params.get("grouped"):
            balance = class_balance(data.labels, split, data.class_names)
            unbalanced = balance["largest"] is not None and abs(balance["largest"]["points"]) >= UNBALANCED_POINTS
            log.log(logging.WARNING if unbalanced else logging.INFO, describe_balance(balance))
        if not 0 <= self.fold < split.n_folds:
            raise ValueError(f"data.fold={self.fold} is out of range: this split has {split.n_folds} folds")
        if self.restored is not None:
            self.restored.check_split(split_digest(split, data.ids), self.source)
        return split

    # ---------------------------------------------------------------------------------------- folds
    def make_fold(self, number: int, *, seed: int | None = None, stream: bool = False) -> Fold:
        """Fold ``number`` of the split as a value; ``seed``: its run's; ``stream``: a cross-validation fold.

        A stream fold draws its training batches from the development set's shared stream, so it sees the same
        batches whether the folds train one after another or together (see :class:`~medmnist_lit.data.fold.Fold`).
        """
        size = self.batch_size if stream else None
        return split_fold(self.split, number, self._transform(number), seed=seed, stream_batch_size=size)

    def refit_fold(self, seed: int | None = None) -> Fold:
        """All development data as one fold (no validation part), for a model refit after cross-validation."""
        return split_fold(self.split, None, self._transform(None), seed=seed)

    def _transform(self, key: int | None) -> Callable[[np.ndarray], PixelTransform]:
        def transform(train: np.ndarray) -> PixelTransform:
            if key not in self._transforms:  # standardisation statistics: one pass over the fold's images, once
                channels = self.dataset.input_shape[0]
                stats = fold_statistics(self.dataset.images, train, channels) if self.standardize else None
                self._stats[key], self._transforms[key] = stats, pixel_transform(channels, stats)
            return self._transforms[key]

        return transform

    def with_fold(self, fold: Fold) -> MedMNISTDataModule:
        """A DataModule that serves ``fold``, sharing this one's data, split and caches.

        Its hyperparameters (saved in checkpoints) name the fold, so ``validate --ckpt_path`` with a fold's
        checkpoint validates that fold.
        """
        hparams = {k: v for k, v in self.hparams.items() if not k.startswith("_")}
        if fold.number is not None:
            hparams["fold"] = fold.number
        other = type(self)(**hparams)
        for name in ("dataset", "split", "external"):  # cached: shared, never recomputed
            if name in self.__dict__:
                other.__dict__[name] = self.__dict__[name]
        other._tensors, other._transforms, other._stats = self._tensors, self._transforms, self._stats
        other._digests = self._digests
        other._fold = fold
        return other

    @property
    def selected_fold(self) -> Fold:
        """The fold this DataModule serves: the one given to :meth:`with_fold`, else fold ``data.fold``."""
        if self._fold is None:  # a refit's checkpoint names no fold: it trained on all development data
            refit = self.restored is not None and self.restored.fold is None
            self._fold = self.refit_fold() if refit else self.make_fold(self.fold)
        return self._fold

    def indices(self, part: Literal["train", "val", "test", "dev"]) -> np.ndarray:
        """Sample indices of ``part``: ``train``/``val`` of :attr:`selected_fold`; the split's ``test``/``dev``."""
        if part in ("train", "val"):
            return self.selected_fold.train if part == "train" else self.selected_fold.val
        if part in ("test", "dev"):
            return self.split.test if part == "test" else self.split.dev
        raise ValueError(f"unknown part {part!r}")

    def class_counts(self, part: Literal["train", "val", "test", "dev"] = "train") -> np.ndarray:
        """Samples per class in ``part`` (of :attr:`selected_fold` for ``train`` and ``val``; multi-label: positives).

        For a multi-label task, the count of each label is its positives in ``part``.
        """
        labels = self.dataset.labels[self.indices(part)]
        if labels.ndim == 2:
            return labels.sum(axis=0, dtype=np.int64)
        return np.bincount(labels, minlength=self.num_classes)

    def save_split(self, path: str | Path) -> None:
        """Save the split's indices so ``--data.split_file`` can re-create it exactly."""
        self.split.save(path, ids=self.dataset.ids)

    # ------------------------------------------------------------------------------------ lightning
    def prepare_data(self) -> None:
        """Decode the source into the cache (once per machine)."""
        _ = self.dataset

    def setup(self, stage: str | None = None) -> None:
        """Build the split and the tensors; computes standardisation statistics on the training part."""
        _ = self.split

    @property
    def transform(self) -> PixelTransform:
        """Pixel conversion of :attr:`selected_fold` (standardisation statistics of its training part only)."""
        return self.selected_fold.transform

    def state_dict(self) -> dict[str, Any]:
        """What checkpoints keep of the data: a :class:`~medmnist_lit.data.provenance.DataProvenance` record."""
        if "dataset" not in self.__dict__ and self.restored is not None:
            return self.restored.to_state()  # never loaded: pass the checkpoint's record on unchanged
        fold, data = self.selected_fold, self.dataset
        self._transform(fold.number)(fold.train)  # computes the statistics of a fold handed to with_fold
        record = DataProvenance(
            source=self.source,
            fingerprint=self.fingerprint,
            class_names=tuple(data.class_names),
            input_shape=data.input_shape,
            split=self.split_digest,
            fold=fold.number,
            stats=self._stats[fold.number],
            task_kind=data.task.kind,
        )
        return record.to_state()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a checkpoint's record; data already loaded is checked against it, data loaded later when it is."""
        restored = DataProvenance.from_state(state_dict)
        if restored == self.restored:  # Lightning restores a checkpoint this DataModule was made from: checked
            return
        self.restored = restored
        if "dataset" in self.__dict__:
            restored.check_data(self.dataset, self.source, self.fingerprint)
        if "split" in self.__dict__:
            restored.check_split(self.split_digest, self.source)

    @cached_property
    def external(self) -> ImageSet:
        """The ``test_source`` dataset, converted like the main one, labels re-coded by class name."""
        if self.test_source is None:
            raise ValueError("no data.test_source is configured")
        return load_external(
            self.test_source,
            self.dataset,
            self.channels,
            self.image_size,
            cache_dir=self.cache_dir,
            skip_bad=self.skip_bad,
        )

    def tensors(
        self, device: torch.device | str = "cpu", which: Literal["main", "external"] = "main"
    ) -> tuple[Tensor, Tensor]:
        """Images as a uint8 ``N×C×H×W`` tensor and labels as int64 on ``device`` (cached per device).

        On the CPU the images are a zero-copy view of the (memory-mapped) ``N×H×W×C`` array, permuted for RGB (not
        contiguous): batches gather their rows, so memory holds a batch, never a second copy of the dataset; and
        freed batch buffers are returned to the system (:func:`~medmnist_lit.utils.memory.return_large_blocks`).
        """
        key = (which, torch.device(device))
        if key not in self._tensors:
            return_large_blocks()  # freed batch buffers leave the resident set (glibc keeps them otherwise)
            data = self.dataset if which == "main" else self.external
            images = np.asarray(data.images)
            with warnings.catch_warnings():
                # zero-copy view of the read-only cache memmap: processes share its pages; it is never written
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                pixels = torch.from_numpy(images)
            x = pixels[:, None] if images.ndim == 3 else pixels.permute(0, 3, 1, 2)
            x = x.to(key[1])
            y = torch.from_numpy(np.asarray(data.labels, dtype=np.int64)).to(key[1])
            self._tensors[key] = (x, y)
        return self._tensors[key]

    def _device(self) -> torch.device:
        trainer = self.trainer
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_batch_size(self, n_train: int) -> int:
        """The mini-batch size in samples (``"full"`` resolved against ``n_train``)."""
        bs = self.batch_size
        return max(1, n_train) if bs == "full" else int(bs)

    def loader(
        self,
        index: np.ndarray,
        *,
        shard: bool = True,
        device: torch.device | None = None,
        transform: PixelTransform | None = None,
    ) -> BatchLoader:
        """An evaluation loader over the samples ``index``, in order, on the trainer's device.

        Args:
            index: Sample indices.
            shard: With several processes, give each its share (``False``: every sample, in order).
            device: Where the batches live (default: the trainer's device).
            transform: Pixel conversion (default: :attr:`selected_fold`'s).
        """
        images, labels = self.tensors(device or self._device())
        rank, world = self._world() if shard else (0, 1)
        idx = torch.tensor(np.asarray(index), dtype=torch.int64)  # a copy: split indices are read-only
        sampler = EpochSampler(idx, sampling="sequential", rank=rank, world_size=world)
        return BatchLoader(images, labels, sampler, self.eval_batch_size, transform or self.transform)

    def train_loader(self, fold: Fold | None = None, device: torch.device | None = None) -> BatchLoader:
        """Shuffled training mini-batches of ``fold`` (default: :attr:`selected_fold`), one per optimizer step."""
        fold = fold or self.selected_fold
        images, labels = self.tensors(device or self._device())
        rank, world = self._world()
        batch_size = self.train_batch_size(len(fold.train) // world)
        return fold_loader(images, labels, [fold], self.sampling, self.seed, batch_size, self.drop_last, rank, world)

    def stream_loader(self, folds: Sequence[Fold], device: torch.device | None = None) -> BatchLoader:
        """The shared cross-validation stream of ``folds`` (made with ``stream=True``), to train them together.

        Every batch comes with the ``folds × batch`` membership of its samples: each fold trains on its own.
        """
        images, labels = self.tensors(device or self._device())
        return fold_loader(images, labels, folds, self.sampling, self.seed, 1, self.drop_last, together=True)

    def train_dataloader(self) -> BatchLoader:
        """Shuffled training mini-batches of :attr:`selected_fold`."""
        return self.train_loader()

    def external_loader(
        self, device: torch.device | None = None, transform: PixelTransform | None = None
    ) -> BatchLoader:
        """Batches of the whole ``test_source`` dataset, in order, converted like :attr:`selected_fold`'s."""
        images, labels = self.tensors(device or self._device(), "external")
        sampler = EpochSampler(torch.arange(len(labels)), sampling="sequential")
        return BatchLoader(images, labels, sampler, self.eval_batch_size, transform or self.transform)

    def val_dataloader(self) -> BatchLoader | list[BatchLoader]:
        """Validation batches of :attr:`selected_fold` (none when it has no validation part, e.g. a refit)."""
        index = self.indices("val")
        return self.loader(index) if len(index) else []

    def test_dataloader(self) -> BatchLoader:
        """Batches of the held-out test set."""
        return self.loader(self.indices("test"))

    def predict_dataloader(self) -> BatchLoader:
        """Batches of the held-out test set, in order (for predictions)."""
        return self.loader(self.indices("test"))
