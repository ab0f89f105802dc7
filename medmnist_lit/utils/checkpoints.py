"""The one place that reads checkpoints: weights-only, whatever the path's origin.

A checkpoint is a pickle. ``torch.load(..., weights_only=False)`` runs any code a crafted file asks for, and
Lightning loads remote paths (``http://…``) that way by default. Every load in medmnist-lit goes through
:func:`load_checkpoint`: the Trainer through :class:`SafeCheckpointIO` (installed by :func:`secure_trainer` on
every Trainer the package builds or is handed), ``Classifier.load_from_checkpoint``, the CLI's checkpoint
defaults and the run functions. Remote ``http(s)`` checkpoints are downloaded to a temporary file and loaded
weights-only like local ones; other remote schemes are refused.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins import TorchCheckpointIO

__all__ = [
    "CheckpointError",
    "SafeCheckpointIO",
    "WeightsOnlyLoading",
    "check_compatible",
    "load_checkpoint",
    "restore",
    "secure_trainer",
]

#: Seconds to wait for a remote checkpoint's server.
DOWNLOAD_TIMEOUT = 60.0
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or must not be (reported in one line, without a traceback)."""


def _refusal(path: str, exc: BaseException) -> CheckpointError:
    """One line for a failed load: the file, and why, without torch's advice to load with ``weights_only=False``."""
    text = str(exc)
    culprit = re.search(r"GLOBAL ([\w.]+)", text)
    detail = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    if culprit:
        why = f"it would import {culprit.group(1)}, which a weights-only load refuses"
    elif isinstance(exc, EOFError) or not text:
        why = "the file is empty or truncated"
    else:  # torch's messages go on with advice to load unsafely: keep the first sentence only
        why = "not a PyTorch checkpoint file: " + (detail.group(1) if detail else text.split(". ")[0])[:200].strip()
    return CheckpointError(f"{path}: not a valid or safe medmnist-lit checkpoint ({why})")


def _download(url: str, directory: str) -> Path:
    """Fetch ``url`` into ``directory`` (a temporary folder the caller removes)."""
    target = Path(directory) / "checkpoint.ckpt"
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response, target.open("wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise CheckpointError(f"--ckpt_path {url}: cannot download the checkpoint ({reason})") from None
    return target


def _read(path: str | os.PathLike[str], map_location: Any) -> Any:
    """``torch.load(path, weights_only=True)`` of a local file or an ``http(s)``/``file`` URL."""
    text = os.fspath(path)
    scheme = _SCHEME.match(text)
    if scheme is None or scheme.group(1).lower() == "file":
        local = Path(text[len("file://") :] if scheme else text).expanduser()
        if not local.is_file():
            what = "is a folder, not a checkpoint file" if local.is_dir() else "does not exist"
            raise CheckpointError(f"--ckpt_path {text}: the checkpoint {what}")
        try:
            return torch.load(local, map_location=map_location, weights_only=True)
        except Exception as exc:  # torch raises many types for bad files: all mean "not a checkpoint"
            raise _refusal(text, exc) from None
    if scheme.group(1).lower() not in ("http", "https"):
        raise CheckpointError(
            f"--ckpt_path {text}: {scheme.group(1)}:// checkpoints are not supported; copy the file to this machine "
            "and pass its local path"
        )
    with tempfile.TemporaryDirectory(prefix="medmnist-lit-ckpt-") as directory:
        local = _download(text, directory)
        try:
            return torch.load(local, map_location=map_location, weights_only=True)
        except Exception as exc:
            raise _refusal(text, exc) from None


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """Read a Lightning checkpoint weights-only: no pickled code can run, whatever the file holds.

    Args:
        path: A local file, a ``file://`` URL, or an ``http(s)://`` URL (downloaded to a temporary file first).
        map_location: Where tensors go (as in :func:`torch.load`).

    Returns:
        The checkpoint dictionary.

    Raises:
        CheckpointError: The file is missing, unreadable, not a checkpoint, or holds objects a weights-only
            load refuses (one line naming the file).
    """
    checkpoint = _read(path, map_location)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), Mapping):
        raise CheckpointError(f"{os.fspath(path)}: not a valid medmnist-lit checkpoint (no state_dict in it)")
    return checkpoint


def check_compatible(checkpoint: Mapping[str, Any], model: torch.nn.Module, path: str | os.PathLike[str]) -> None:
    """Fail fast, naming the first mismatching tensor, when ``checkpoint`` was trained with another model shape."""
    own = model.state_dict()
    theirs = checkpoint["state_dict"]
    missing = sorted(set(own) - set(theirs))
    unexpected = sorted(set(theirs) - set(own))
    if missing or unexpected:
        detail = f"{missing[0]} is missing" if missing else f"{unexpected[0]} is unexpected"
        raise CheckpointError(
            f"--ckpt_path {os.fspath(path)}: the checkpoint holds another model ({detail}); "
            "pass the --model and --data options it was trained with"
        )
    for key, value in own.items():
        if tuple(value.shape) != tuple(theirs[key].shape):
            raise CheckpointError(
                f"--ckpt_path {os.fspath(path)}: the checkpoint holds another model ({key} is "
                f"{tuple(theirs[key].shape)} there, {tuple(value.shape)} here); "
                "pass the --model and --data options it was trained with"
            )


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with every load going through :func:`load_checkpoint` (saving is unchanged)."""

    def load_checkpoint(
        self,
        path: Any,
        map_location: Callable[..., Any] | None = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """Load ``path`` weights-only; a request for ``weights_only=False`` is refused, never honoured silently."""
        if weights_only is False:
            raise CheckpointError(f"{path}: medmnist-lit loads checkpoints weights-only; weights_only=False is refused")
        return load_checkpoint(path, map_location=map_location)


def secure_trainer(trainer: L.Trainer) -> L.Trainer:
    """Route every checkpoint load of ``trainer`` through :func:`load_checkpoint`; returns ``trainer``.

    Raises:
        CheckpointError: The trainer has a custom CheckpointIO plugin, which would load checkpoints its own way.
    """
    strategy = trainer.strategy
    current = strategy.checkpoint_io
    if isinstance(current, SafeCheckpointIO):
        return trainer
    if type(current) is not TorchCheckpointIO:
        raise CheckpointError(
            f"--trainer.plugins: the checkpoint plugin {type(current).__name__} is not supported; medmnist-lit "
            "reads checkpoints weights-only through its own (remove the plugin)"
        )
    strategy.checkpoint_io = SafeCheckpointIO()
    return trainer


def restore(
    cls: type[Any],
    checkpoint_path: str | os.PathLike[str],
    map_location: Any = None,
    hparams_file: Any = None,
    strict: bool | None = None,
    weights_only: bool | None = None,
    **kwargs: Any,
) -> Any:
    """``load_from_checkpoint`` for a LightningModule or LightningDataModule class, reading via :func:`load_checkpoint`.

    The object is built from the checkpoint's saved ``__init__`` arguments (``kwargs`` override them); Lightning's
    ``_instantiator`` bookkeeping is dropped, so no class named in the file is imported.
    """
    if hparams_file is not None or weights_only is False:
        option = "hparams_file" if hparams_file is not None else "weights_only=False"
        raise CheckpointError(f"{os.fspath(checkpoint_path)}: {option} is not supported by medmnist-lit's loader")
    checkpoint = load_checkpoint(checkpoint_path, map_location="cpu" if map_location is None else map_location)
    saved = checkpoint.get(cls.CHECKPOINT_HYPER_PARAMS_KEY) or {}
    obj = cls(**{**{k: v for k, v in saved.items() if not str(k).startswith("_")}, **kwargs})
    if isinstance(obj, L.LightningModule):
        obj.on_load_checkpoint(checkpoint)
        obj.load_state_dict(checkpoint["state_dict"], strict=strict is not False)
    elif checkpoint.get(cls.__qualname__):  # a DataModule's state_dict, as Lightning restores it
        obj.load_state_dict(checkpoint[cls.__qualname__])
    return obj


class WeightsOnlyLoading:
    """Mix in before ``LightningModule``/``LightningDataModule``: ``load_from_checkpoint`` reads via :func:`restore`."""

    @classmethod
    def load_from_checkpoint(
        cls,
        checkpoint_path: Any,
        map_location: Any = None,
        hparams_file: Any = None,
        strict: bool | None = None,
        weights_only: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        """Lightning's ``load_from_checkpoint``, reading the file weights-only (local path or ``http(s)`` URL)."""
        return restore(cls, checkpoint_path, map_location, hparams_file, strict, weights_only, **kwargs)
