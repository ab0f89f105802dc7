"""Console output: log lines that print cleanly above the progress bar."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm


class TqdmHandler(logging.Handler):
    """Write records to stdout with ``tqdm.write``, so they appear above an active progress bar.

    ``sys.stdout`` is looked up per record, so redirections made after set-up (pytest's capture, a batch
    worker's log file) are honoured.
    """

    def emit(self, record: logging.LogRecord) -> None:
        """Write one record."""
        try:
            tqdm.write(self.format(record), file=sys.stdout)
        except Exception:
            self.handleError(record)


def setup_console(level: int = logging.INFO) -> None:
    """Send ``medmnist_lit`` logs to stdout (above the bar) and quiet Lightning's start-up chatter."""
    package = logging.getLogger("medmnist_lit")
    if not any(isinstance(h, TqdmHandler) for h in package.handlers):
        handler = TqdmHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        package.addHandler(handler)
    package.setLevel(level)
    package.propagate = False
    # "GPU available", "💡 Tip", "Trainer.fit stopped" and similar info lines: one line per epoch is the goal
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    # epoch metrics are computed by torchmetrics, which already synchronises processes
    warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\(")
    # evaluating a checkpoint needs its weights, not the callbacks that wrote it
    warnings.filterwarnings("ignore", message="Be aware that when using `ckpt_path`")
    # a refit has no validation part on purpose
    warnings.filterwarnings("ignore", message="Total length of .* across ranks is zero")


@contextlib.contextmanager
def console_to(path: Path) -> Iterator[None]:
    """Send everything written to stdout and stderr (Python and C level) to ``path`` while the block runs."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with path.open("a", encoding="utf-8", buffering=1) as handle:
        os.dup2(handle.fileno(), 1)
        os.dup2(handle.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
