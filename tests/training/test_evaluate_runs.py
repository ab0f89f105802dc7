"""``test``, ``validate`` and ``predict`` write into the checkpoint's run directory, never a new stray run."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cliruns import run_in
from tbevents import scalars

from medmnist_lit.cli import main
from medmnist_lit.lightning_cli import checkpoint_run_dir

FAST = ["--trainer.max_epochs", "1", "--data.batch_size", "128", "--trainer.logger.init_args.name", "t"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One short fit of the digits demo; its run directory."""
    cwd = tmp_path_factory.mktemp("fit")
    run_in(cwd, ["fit", *FAST, "--trainer.enable_progress_bar", "false"])
    return cwd / "lightning_logs" / "t" / "version_0"


def test_checkpoint_run_dir_is_the_parent_of_checkpoints(tmp_path: Path) -> None:
    assert checkpoint_run_dir(tmp_path / "r" / "checkpoints" / "last.ckpt") == tmp_path / "r"
    assert checkpoint_run_dir(tmp_path / "models" / "m.ckpt") == tmp_path / "models"
    assert checkpoint_run_dir(f"file://{tmp_path}/r/checkpoints/last.ckpt") == tmp_path / "r"


def test_test_and_predict_log_into_the_run_directory(run: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(run.parent.parent.parent)  # where the fit ran: lightning_logs/ is here
    before = scalars(run)
    ckpt = str(run / "checkpoints" / "last.ckpt")
    assert main(["test", "--ckpt_path", ckpt]) == 0
    assert main(["validate", "--ckpt_path", ckpt]) == 0
    assert main(["predict", "--ckpt_path", ckpt]) == 0
    assert sorted(p.name for p in (run.parent).iterdir()) == ["version_0"]  # no stray version_1
    logged = scalars(run)
    for tag in ("test/acc", "val/acc"):  # the test and validate commands' points, on the run's own charts
        assert len(logged[tag]) == len(before.get(tag, [])) + 1, tag
    assert (run / "predictions.csv").exists()
    out = capsys.readouterr().out
    assert f"logged to: {run}" in out and f"predictions: {run / 'predictions.csv'}" in out


def test_a_configured_logger_is_honoured(run: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    ckpt = str(run / "checkpoints" / "last.ckpt")
    assert main(["test", "--ckpt_path", ckpt, "--trainer.logger.init_args.name", "evaluated"]) == 0
    assert (tmp_path / "lightning_logs" / "evaluated" / "version_0").is_dir()


@pytest.fixture
def served(run: Path) -> Iterator[str]:
    """The run's checkpoints folder over HTTP on 127.0.0.1."""
    handler = functools.partial(_QuietHandler, directory=str(run / "checkpoints"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def test_a_checkpoint_at_a_url_logs_nothing_and_predicts_here(served: str, tmp_path: Path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["predict", "--ckpt_path", f"{served}/last.ckpt"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.csv"]  # no lightning_logs/ either
    out = capsys.readouterr().out
    assert "logs: none (the checkpoint is a URL, so it has no run directory)" in out
    assert f"predictions go to {tmp_path / 'predictions.csv'}" in out


def test_predicting_a_folder_names_it_as_the_data(run: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    from datagen import write_image

    monkeypatch.chdir(tmp_path)
    write_image(tmp_path / "new" / "scan.png", size=8)
    out = tmp_path / "p.csv"
    ckpt = str(run / "checkpoints" / "last.ckpt")
    assert main(["predict", "--ckpt_path", ckpt, "--predict.source", "new", "--predict.output", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "data: new (the images to predict)" in lines  # not the training data, which predicting does not read
    assert not any(line.startswith("data: ") and "new" not in line for line in lines)
