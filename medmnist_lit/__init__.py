"""medmnist-lit: PyTorch Lightning experiments on Medical MNIST and MedMNIST.

Names are imported lazily (PEP 562) so that light commands such as ``medmnist-lit prepare`` do not pay for
importing torch and Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Classifier": "medmnist_lit.model.classifier",
    "EpochSummary": "medmnist_lit.callbacks",
    "ImageSet": "medmnist_lit.data.imageset",
    "LRSchedulerCallback": "medmnist_lit.callbacks",
    "LogisticRegression": "medmnist_lit.model.heads",
    "MLP": "medmnist_lit.model.heads",
    "MedMNISTDataModule": "medmnist_lit.data.datamodule",
    "RunJob": "medmnist_lit.jobs",
    "RunResult": "medmnist_lit.training.fit",
    "Split": "medmnist_lit.splits.split",
    "WarmupCosineLR": "medmnist_lit.model.schedules",
    "fit_and_test": "medmnist_lit.training.fit",
    "load_dataset": "medmnist_lit.data.cache",
    "make_split": "medmnist_lit.splits.strategies",
    "run_job": "medmnist_lit.jobs",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'medmnist_lit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
