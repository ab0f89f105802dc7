"""Console output: ``medmnist_lit`` log lines on stdout, clean above a progress bar, and no library chatter.

While a bar is on screen, :func:`above_progress_bars` hands the console handler to tqdm's own
``tqdm.contrib.logging.logging_redirect_tqdm``, which writes each record with ``tqdm.write`` (clear the bar,
print the line, redraw the bar). Outside it, :class:`ConsoleHandler` writes plainly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Literal

__all__ = [
    "ConsoleHandler",
    "above_progress_bars",
    "console_to",
    "final_frames_only",
    "process_rank",
    "setup_console",
]

PACKAGE = "medmnist_lit"

#: Where multi-process launchers put a process's rank, in the order Lightning's ``rank_zero_only`` reads them.
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def process_rank() -> int:
    """This process's rank among the processes of one run (``--trainer.strategy ddp``); 0 when it runs alone.

    Read from the environment, as Lightning does, so it is known before Lightning is imported: its launcher
    re-executes the command with ``LOCAL_RANK`` set for every process but the first.
    """
    for key in RANK_VARIABLES:
        value = os.environ.get(key, "")
        if value.isdigit():
            return int(value)
    return 0


def _rank_zero(record: logging.LogRecord) -> bool:
    # the other processes of a data-parallel run would repeat every line; their errors still show
    return record.levelno >= logging.ERROR or process_rank() == 0


class ConsoleHandler(logging.StreamHandler):
    """A ``StreamHandler`` on whatever ``sys.stdout`` (or ``sys.stderr``) is when a record is written.

    A plain ``StreamHandler(sys.stdout)`` keeps the stream of its set-up, so a later redirection (pytest's
    capture, ``contextlib.redirect_stdout``) would be missed or, once that stream is closed, fail; tqdm's handler
    has the same limit, hence this class. It still counts as a console handler for ``logging_redirect_tqdm``
    (its stream *is* ``sys.stdout``).

    Args:
        target: ``"stdout"`` or ``"stderr"``.
    """

    def __init__(self, target: Literal["stdout", "stderr"] = "stdout") -> None:
        self.target = target
        super().__init__()

    @property
    def stream(self) -> IO[str]:
        """The current ``sys.stdout`` or ``sys.stderr``."""
        return sys.stdout if self.target == "stdout" else sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass  # StreamHandler.__init__ and setStream assign it; the current sys.stdout/stderr always wins


@contextlib.contextmanager
def above_progress_bars() -> Iterator[None]:
    """While the block runs, ``medmnist_lit`` log lines print above active tqdm bars (tqdm's own redirection)."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm(loggers=[logging.getLogger(PACKAGE)]):
        yield


def setup_console(level: int = logging.INFO, target: Literal["stdout", "stderr"] = "stdout") -> None:
    """Send ``medmnist_lit`` logs to ``target`` and quiet Lightning's start-up chatter and known library noise.

    Training commands log to stdout (with the epoch lines); data commands to stderr, keeping stdout for their
    result. One console handler at a time: a second call moves it, and handlers of other kinds (files) stay.
    """
    package = logging.getLogger(PACKAGE)
    for handler in list(package.handlers):
        if isinstance(handler, ConsoleHandler) and handler.target != target:
            package.removeHandler(handler)
    if not any(isinstance(h, ConsoleHandler) for h in package.handlers):
        handler = ConsoleHandler(target)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.addFilter(_rank_zero)
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
    # Matplotlib warns once per missing character (non-Latin class names): a flood of lines about a figure the
    # user did not ask about; the figure itself shows what its fonts lack
    warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from font", category=UserWarning)


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


class _FinalFrames:
    """A text stream that passes on each line as a terminal would end up showing it (after its last carriage return)."""

    def __init__(self, target: IO[str]) -> None:
        self.target = target
        self.pending = ""

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            shown = line.rsplit("\r", 1)[-1]
            if shown.strip():
                self.target.write(shown + "\n")
        return len(text)

    def flush(self) -> None:
        self.target.flush()

    def isatty(self) -> bool:
        return False

    def close(self) -> None:
        shown = self.pending.rsplit("\r", 1)[-1]
        if shown.strip():
            self.target.write(shown + "\n")
        self.pending = ""
        self.target.flush()


@contextlib.contextmanager
def final_frames_only() -> Iterator[None]:
    """Off a terminal, keep only the last frame of each carriage-return-redrawn line written to ``sys.stderr``.

    For progress bars that a library draws with its own tqdm (Lightning's learning-rate finder): a log file gets
    the bar's final state once instead of a frame per step. On a terminal nothing changes.
    """
    isatty = getattr(sys.stderr, "isatty", None)
    if isatty is not None and isatty():
        yield
        return
    stream = _FinalFrames(sys.stderr)
    try:
        with contextlib.redirect_stderr(stream):
            yield
    finally:
        stream.close()
