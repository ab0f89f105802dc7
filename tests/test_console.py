"""What a person sees in a terminal or a log file: a bar only on a terminal, clean log lines, an early first line."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from datagen import make_image_folder
from torch.utils.data import DataLoader, TensorDataset

from medmnist_lit.callbacks import EpochSummary, ProgressBar
from medmnist_lit.utils.console import setup_console

log = logging.getLogger("medmnist_lit")


def _command(args: list[str], cwd: Path) -> str:
    """stdout and stderr of ``python -m medmnist_lit ARGS``, piped (not a terminal), as one text."""
    env = {**os.environ, "MEDMNIST_LIT_CACHE": str(cwd / "cache"), "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "medmnist_lit", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    return done.stdout


def test_fit_into_a_pipe_has_no_bar_frames_and_one_line_per_epoch(tmp_path: Path) -> None:
    source = make_image_folder(tmp_path / "data", {"a": 30, "b": 30})
    text = _command(
        ["fit", "--data.source", str(source), "--trainer.max_epochs", "2", "--data.batch_size", "8"], tmp_path
    )
    assert "\r" not in text  # no tqdm carriage-return frames
    lines = text.splitlines()
    epochs = [line for line in lines if line.startswith("Epoch")]
    assert [line.split(",")[0] for line in epochs] == ["Epoch [1/2]", "Epoch [2/2]"]  # no Lightning "Epoch 0:" frames
    # the first line comes before anything is imported or loaded; the data line before the data is read
    assert lines[0] == "medmnist-lit fit: starting (loading PyTorch and Lightning)..."
    data = next(i for i, line in enumerate(lines) if line.startswith(f"data: {source}"))
    assert data < lines.index(epochs[0])
    assert "Seed set to" not in text  # Lightning's start-up chatter stays quiet


def test_the_first_line_is_printed_before_torch_is_imported(tmp_path: Path) -> None:
    # a spy on stdout notes whether torch was already imported when the first line was written
    code = (
        "import sys\n"
        "from medmnist_lit import cli\n"
        "out, seen = sys.stdout, []\n"
        "class Spy:\n"
        "    def write(self, text):\n"
        "        if not seen and text.strip():\n"
        "            seen.append(text)\n"
        "            out.write(f'torch imported: {\"torch\" in sys.modules}\\n')\n"
        "        return out.write(text)\n"
        "    def flush(self):\n"
        "        out.flush()\n"
        "sys.stdout = Spy()\n"
        "sys.exit(cli.main(['fit', '--trainer.max_epoch', '1']))\n"
    )
    env = {**os.environ, "MEDMNIST_LIT_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stdout.splitlines()[:2] == [
        "torch imported: False",
        "medmnist-lit fit: starting (loading PyTorch and Lightning)...",
    ]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class _Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 2)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.layer(x), y)
        self.log("train/loss", loss, on_epoch=True, on_step=False)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _Handlers(L.Callback):
    """Notes the ``medmnist_lit`` log handlers while training runs."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def on_train_epoch_end(self, *_: Any) -> None:
        self.seen.update(type(h).__name__ for h in log.handlers)


def _fit(tmp_path: Path, bar: ProgressBar, *extra: L.Callback) -> None:
    data = TensorDataset(torch.randn(32, 4), torch.randint(0, 2, (32,)))
    trainer = L.Trainer(
        max_epochs=2,
        callbacks=[bar, EpochSummary(), *extra],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(_Tiny(), DataLoader(data, batch_size=8))


def test_on_a_terminal_log_lines_print_above_the_bar(tmp_path: Path, monkeypatch) -> None:
    screen = _Terminal()
    monkeypatch.setattr(sys, "stdout", screen)
    setup_console()
    bar, handlers = ProgressBar(min_interval=0.0), _Handlers()
    _fit(tmp_path, bar, handlers)
    assert "_TqdmLoggingHandler" in handlers.seen  # tqdm's own logging redirection (tqdm.contrib.logging)
    text = screen.getvalue()
    assert "Epoch 1/2" in text and "step/s" in text  # the bar was drawn
    # tqdm.write clears the bar first, so the epoch line is a line of its own, not glued to a bar frame
    pieces = [piece for chunk in text.split("\n") for piece in chunk.split("\r")]
    assert any(piece.startswith("Epoch [1/2], Train Loss: ") for piece in pieces), text
    assert "_TqdmLoggingHandler" not in [type(h).__name__ for h in log.handlers]  # the redirection ended with training


def test_off_a_terminal_the_bar_stays_silent_and_log_lines_follow_a_later_redirection(tmp_path: Path, monkeypatch):
    setup_console()
    file = io.StringIO()  # replaced after set-up, as pytest's capture or redirect_stdout do
    monkeypatch.setattr(sys, "stdout", file)
    bar = ProgressBar(min_interval=0.0)
    _fit(tmp_path, bar)
    assert not bar.is_enabled
    lines = file.getvalue().splitlines()
    assert "\r" not in file.getvalue()
    assert [line.split(",")[0] for line in lines] == ["Epoch [1/2]", "Epoch [2/2]"]


def test_a_progress_bar_the_user_configured_replaces_ours(tmp_path: Path, monkeypatch) -> None:
    from lightning.pytorch.callbacks import TQDMProgressBar

    from medmnist_lit.lightning_cli import build_cli

    monkeypatch.chdir(tmp_path)
    args = ["--trainer.callbacks+", "lightning.pytorch.callbacks.TQDMProgressBar", "--trainer.logger", "false"]
    cli = build_cli("fit", args)
    bar = cli.trainer.progress_bar_callback
    assert type(bar) is TQDMProgressBar
    cli = build_cli("fit", ["--trainer.enable_progress_bar", "false", "--trainer.logger", "false"])
    assert cli.trainer.progress_bar_callback is None  # Lightning's meaning: never a bar


def test_matplotlib_glyph_warnings_do_not_reach_the_console() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        setup_console()  # its filters go on top of the default ones
        glyph = "Glyph 20013 (\\N{CJK UNIFIED IDEOGRAPH-4E2D}) missing from font(s) DejaVu Sans."
        warnings.warn(glyph, UserWarning, stacklevel=2)
        warnings.warn("a real warning of the user's", UserWarning, stacklevel=2)
    assert [str(w.message) for w in caught] == ["a real warning of the user's"]


@pytest.fixture(autouse=True)
def _restore_logging() -> Any:
    handlers = list(log.handlers)
    yield
    log.handlers = handlers


def test_lr_find_into_a_pipe_keeps_only_the_final_frame_of_lightnings_bar(tmp_path: Path) -> None:
    source = make_image_folder(tmp_path / "data", {"a": 30, "b": 30})
    args = ["lr-find", "--data.source", str(source), "--data.batch_size", "8", "--lr_find.num_training", "20"]
    text = _command(args, tmp_path)
    assert "\r" not in text  # Lightning's "Finding best initial lr" bar: its last state, once
    assert sum("Finding best initial lr" in line for line in text.splitlines()) <= 1
    assert "Suggested learning rate" in text or "No suggestion" in text


def test_final_frames_only_passes_on_what_a_terminal_would_show(monkeypatch) -> None:
    from medmnist_lit.utils.console import final_frames_only

    buffer = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buffer)
    with final_frames_only():
        sys.stderr.write("bar 1/3\rbar 2/3\rbar 3/3\n")
        sys.stderr.write("a warning\n")
        sys.stderr.write("\rtail 1\rtail 2")
    assert buffer.getvalue() == "bar 3/3\na warning\ntail 2\n"
