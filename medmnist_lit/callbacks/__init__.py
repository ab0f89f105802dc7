"""Lightning callbacks of medmnist-lit, one concept per module."""

from medmnist_lit.callbacks.checkpoint import EpochNumberCheckpoint
from medmnist_lit.callbacks.epoch_summary import EpochSummary
from medmnist_lit.callbacks.lr_scheduler import LRSchedulerCallback
from medmnist_lit.callbacks.progress import ProgressBar
from medmnist_lit.callbacks.run_artifacts import RunArtifacts

__all__ = ["EpochNumberCheckpoint", "EpochSummary", "LRSchedulerCallback", "ProgressBar", "RunArtifacts"]
