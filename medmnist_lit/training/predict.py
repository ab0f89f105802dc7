"""Predictions of a trained model as CSV: for the test split of its data, or for any images.

``medmnist-lit predict --ckpt_path X`` predicts the test split the model was trained against;
``--predict.source PATH`` predicts every image of a source instead: a plain folder of image files (no labels),
a class-folder tree, a ``.zip`` of one, or a MedMNIST ``.npz`` (labels kept for the CSV). That needs only the
checkpoint: it holds the class names, the input shape and the pixel statistics the model was trained with.

A multi-label model writes, per image, the labels it has (``label``) and the labels whose probability is above
MedMNIST's 0.5 (``predicted``), each joined by ``;``, then one probability per label.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medmnist_lit.callbacks.run_artifacts import run_dir
from medmnist_lit.data.cache import load_dataset
from medmnist_lit.data.convert import UnsupportedImage, to_mode
from medmnist_lit.data.layout import DataError, is_image_name, require_source
from medmnist_lit.data.loaders import BatchLoader, EpochSampler
from medmnist_lit.utils.checkpoints import secure_trainer
from medmnist_lit.utils.files import atomic_path


def _label_text(label: Any, names: list[str]) -> str:
    """A class name, or the names of a multi-label row's positive labels joined by ``;``."""
    label = np.asarray(label)
    if label.ndim:
        return ";".join(name for name, on in zip(names, label.tolist(), strict=True) if on)
    return names[int(label)]


def _plain_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder`` when it is a plain folder of images (no class sub-folders)."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and is_image_name(p.name))
    has_classes = any(p.is_dir() and any(is_image_name(q.name) for q in p.iterdir()) for p in folder.iterdir())
    return [] if has_classes else files


def read_images(
    path: str | Path,
    *,
    channels: int,
    image_size: int | None,
    input_shape: tuple[int, ...],
    cache_dir: str | None = None,
) -> tuple[list[str], np.ndarray, list[str]]:
    """Ids, uint8 images ``N×H×W[×C]`` and label names (empty strings when unknown) of every image of ``path``.

    Raises:
        DataError: The path has no images, or their size does not match the model's input.
    """
    from PIL import Image

    path = Path(path).expanduser()
    require_source(path, "--predict.source", "a folder of images, a class-folder tree, a .zip or a .npz")
    files = _plain_images(path) if path.is_dir() else []
    if files:
        mode = "L" if channels == 1 else "RGB"
        arrays = []
        for file in files:
            with Image.open(file) as img:
                try:
                    img = to_mode(img, mode)  # the decoder's exact conversion (16-bit, alpha, EXIF ...)
                except UnsupportedImage as exc:
                    raise DataError(f"--predict.source {file}: {exc}") from None
                if image_size is not None:
                    img = img.resize((image_size, image_size), Image.Resampling.BILINEAR)
                arrays.append(np.asarray(img))
        sizes = {a.shape[:2] for a in arrays}
        if len(sizes) > 1 or sizes != {tuple(input_shape[1:])}:
            raise DataError(
                f"--predict.source {path}: images of size {sorted(sizes)} (H, W), but the model takes "
                f"{tuple(input_shape[1:])}; set --data.image_size {input_shape[-1]} to resize them"
            )
        return [f.name for f in files], np.stack(arrays), [""] * len(files)
    data = load_dataset(path, channels=channels, image_size=image_size, cache_dir=cache_dir)
    if data.input_shape != tuple(input_shape):
        raise DataError(
            f"--predict.source {path}: images of shape {data.input_shape} (C, H, W), but the model takes "
            f"{tuple(input_shape)}; set --data.image_size / --data.channels to convert them"
        )
    names = list(data.class_names)
    return [str(i) for i in data.ids], np.asarray(data.images), [_label_text(label, names) for label in data.labels]


def predict_to_csv(
    trainer: Any, model: Any, datamodule: Any, ckpt_path: str | None, output: str | None, source: str | None = None
) -> Path:
    """Predict with ``ckpt_path`` and write one row per image: id, label, predicted class, class probabilities.

    A multi-label model predicts the labels above 0.5, joined by ``;`` (as the labels are; see the module doc).

    Args:
        trainer: Drives the prediction (``trainer.predict``).
        model: The classifier (weights come from ``ckpt_path``).
        datamodule: The data the model was trained on (class names, conversion and standardisation come from it:
            from the checkpoint's record when it was restored from one, so ``source`` needs no training data).
        ckpt_path: Checkpoint to predict with.
        output: CSV path (default ``predictions.csv`` in the run directory).
        source: Images to predict (default: the datamodule's test split).
    """
    names = list(datamodule.class_names)
    restored = getattr(datamodule, "restored", None)
    if source is None:
        data = datamodule.dataset
        index = datamodule.indices("test")
        ids = [str(data.ids[i]) for i in index]
        labels = [_label_text(data.labels[i], names) for i in index]
        images, _ = datamodule.tensors()
        loader_images, loader_index = images, torch.as_tensor(np.array(index), dtype=torch.int64)
    else:
        ids, pixels, labels = read_images(
            source,
            channels=datamodule.channels,
            image_size=datamodule.image_size,
            input_shape=tuple(datamodule.input_shape),
            cache_dir=datamodule.cache_dir,
        )
        pixels = pixels[:, None] if pixels.ndim == 3 else pixels.transpose(0, 3, 1, 2)
        loader_images = torch.from_numpy(np.ascontiguousarray(pixels))
        loader_index = torch.arange(len(ids))
    placeholder = torch.zeros(len(loader_images), dtype=torch.int64)
    sampler = EpochSampler(loader_index, sampling="sequential")
    # the statistics the model was trained with; they equal the data's own when it is there (the split is checked)
    transform = restored.transform if restored is not None else datamodule.transform
    loader = BatchLoader(loader_images, placeholder, sampler, datamodule.eval_batch_size, transform)
    batches = secure_trainer(trainer).predict(model, dataloaders=loader, ckpt_path=ckpt_path)
    probs = torch.cat([torch.as_tensor(b).float().cpu() for b in batches or []]).numpy()
    task = getattr(model, "task", None)
    multilabel = bool(getattr(task, "multilabel", False))
    path = Path(output) if output else run_dir(trainer) / "predictions.csv"
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "label", "predicted", *[f"p_{name}" for name in names]])
        for sample_id, label, p in zip(ids, labels, probs, strict=True):
            predicted = _label_text(p > 0.5, names) if multilabel else names[int(p.argmax())]
            writer.writerow([sample_id, label, predicted, *[f"{v:.6f}" for v in p]])
    return path
