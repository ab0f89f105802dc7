"""Checkpoints are read weights-only whatever way their path arrives: no pickled code ever runs.

The attack checkpoint is a real run's checkpoint with one extra hyperparameter whose ``__reduce__`` opens a marker
file for writing (harmless), served from a local HTTP server on 127.0.0.1 and from disk.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import yaml

from medmnist_lit.cli import main
from medmnist_lit.data.datamodule import MedMNISTDataModule
from medmnist_lit.model.classifier import Classifier
from medmnist_lit.training.fit import fit_and_test
from medmnist_lit.utils.checkpoints import CheckpointError, SafeCheckpointIO, load_checkpoint

FAST = ["--trainer.max_epochs", "1", "--data.batch_size", "64", "--trainer.enable_progress_bar", "false"]


class Payload:
    """Unpickling this calls ``open(marker, "w")``: the file appears only if the pickle's code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


@pytest.fixture(scope="module")
def good_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("good")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        assert main(["fit", *FAST, "--trainer.logger.init_args.name", "g"]) == 0
    return cwd / "lightning_logs" / "g" / "version_0" / "checkpoints" / "last.ckpt"


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "PWNED"


@pytest.fixture
def evil_ckpt(good_ckpt: Path, tmp_path: Path, marker: Path) -> Path:
    checkpoint = torch.load(good_ckpt, map_location="cpu", weights_only=True)
    checkpoint["hyper_parameters"]["evil"] = Payload(marker)
    path = tmp_path / "evil.ckpt"
    torch.save(checkpoint, path)
    return path


@pytest.fixture
def served(evil_ckpt: Path, good_ckpt: Path) -> Iterator[dict[str, str]]:
    """URLs of the evil and the good checkpoint on a loopback HTTP server."""
    files = {"/evil.ckpt": evil_ckpt.read_bytes(), "/good.ckpt": good_ckpt.read_bytes()}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # http.server API name
            body = files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    assert httpd.server_address[0] == "127.0.0.1"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield {"evil": f"{base}/evil.ckpt", "good": f"{base}/good.ckpt", "missing": f"{base}/missing.ckpt"}
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_the_payload_is_real(evil_ckpt: Path, marker: Path) -> None:
    """Guard for the tests below: an unsafe load of this file does create the marker."""
    torch.load(evil_ckpt, map_location="cpu", weights_only=False)
    assert marker.exists()


def one_line_refusal(err: str, culprit: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert culprit in lines[0] and "not a valid or safe medmnist-lit checkpoint" in lines[0], lines[0]
    assert "weights_only=False" not in err and "Traceback" not in err


@pytest.mark.parametrize(
    "how",
    [
        "fit_url",
        "test_url",
        "validate_url",
        "predict_url",
        "test_config",
        "fit_config",
        "test_repeated",
        "fit_local",
        "test_local",
    ],
)
def test_no_command_runs_a_checkpoints_code(
    how: str,
    served: dict[str, str],
    evil_ckpt: Path,
    good_ckpt: Path,
    marker: Path,
    tmp_path: Path,
    monkeypatch,
    capsys,
) -> None:
    monkeypatch.chdir(tmp_path)
    command, origin = how.split("_")
    evil = str(evil_ckpt) if origin == "local" else served["evil"]
    extra = ["--trainer.logger", "false"] if command != "fit" else []
    if origin == "config":
        config = tmp_path / "c.yaml"
        config.write_text(yaml.safe_dump({"ckpt_path": evil}))
        args = [command, "--config", str(config), *FAST, *extra]
    elif origin == "repeated":
        args = [command, "--ckpt_path", str(good_ckpt), "--ckpt_path", evil, *FAST, *extra]
    else:
        args = [command, "--ckpt_path", evil, *FAST, *extra]
    capsys.readouterr()
    assert main(args) == 2
    assert not marker.exists()
    one_line_refusal(capsys.readouterr().err, evil)
    assert not (tmp_path / "lightning_logs").exists()  # nothing half-made


def test_python_api_loads_are_weights_only(served: dict[str, str], evil_ckpt: Path, marker: Path, tmp_path) -> None:
    for path in (served["evil"], str(evil_ckpt)):
        with pytest.raises(CheckpointError, match="would import"):
            Classifier.load_from_checkpoint(path)
        with pytest.raises(CheckpointError, match="would import"):
            MedMNISTDataModule.load_from_checkpoint(path)
    datamodule = MedMNISTDataModule(batch_size=64)
    model = Classifier(input_shape=datamodule.input_shape, num_classes=datamodule.num_classes)
    trainer = L.Trainer(max_epochs=1, default_root_dir=tmp_path, enable_progress_bar=False, logger=False)
    with pytest.raises(CheckpointError, match="would import"):
        fit_and_test(trainer, model, datamodule, ckpt_path=served["evil"])
    assert isinstance(trainer.strategy.checkpoint_io, SafeCheckpointIO)
    with pytest.raises(CheckpointError, match="would import"):
        trainer.test(model, datamodule=datamodule, ckpt_path=served["evil"])
    assert not marker.exists()


def test_batch_runs_load_weights_only(served: dict[str, str], marker: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "spec.yaml"
    base = {"trainer": {"max_epochs": 1, "enable_progress_bar": False}, "ckpt_path": served["evil"]}
    spec.write_text(yaml.safe_dump({"name": "b", "base": base, "seeds": [0], "runs": [{"name": "r"}]}))
    main(["batch", str(spec), "--root", str(tmp_path / "logs")])
    assert not marker.exists()
    record = yaml.safe_load((tmp_path / "logs" / "b" / "r__seed0" / "record.json").read_text())
    assert record["status"] == "failed" and "not a valid or safe" in record["error"]


def test_remote_good_checkpoint_is_downloaded_and_scored(served: dict[str, str], tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["test", "--ckpt_path", served["good"], "--trainer.logger", "false"]) == 0
    model = Classifier.load_from_checkpoint(served["good"])
    assert model.hparams.num_classes == 10
    with pytest.raises(CheckpointError, match="cannot download"):
        load_checkpoint(served["missing"])


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (os.urandom(4096), "not a PyTorch checkpoint file"),
        (b"", "empty or truncated"),
        (b"PK\x03\x04garbage", "not a PyTorch checkpoint file"),
    ],
    ids=["random", "empty", "broken-zip"],
)
def test_unreadable_checkpoint_is_one_line(content: bytes, why: str, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "bad.ckpt"
    path.write_bytes(content)
    for command in ("test", "fit"):
        capsys.readouterr()
        assert main([command, "--ckpt_path", str(path), *FAST]) == 2
        err = capsys.readouterr().err
        one_line_refusal(err, str(path))
        assert why in err
    assert not (tmp_path / "lightning_logs").exists()


def test_missing_and_unsupported_paths(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.ckpt")
    with pytest.raises(CheckpointError, match="is a folder"):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="s3:// checkpoints are not supported"):
        load_checkpoint("s3://bucket/x.ckpt")


def test_resume_from_another_model_fails_before_the_run_directory(
    good_ckpt: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["fit", "--ckpt_path", str(good_ckpt), "--model.head", "mlp", "--model.hidden_sizes", "[8]", *FAST]
    assert main([*args, "--trainer.max_epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert "the checkpoint holds another model" in err and "--model" in err
    assert not (tmp_path / "lightning_logs").exists()


def test_resume_from_a_good_checkpoint_goes_on(good_ckpt: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "--ckpt_path", str(good_ckpt), *FAST, "--trainer.max_epochs", "2"]) == 0
    last = load_checkpoint(tmp_path / "lightning_logs" / "medmnist" / "version_0" / "checkpoints" / "last.ckpt")
    assert last["epoch"] == 1


def test_custom_checkpoint_plugin_is_refused(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    plugin = "lightning.pytorch.plugins.AsyncCheckpointIO"
    assert main(["fit", *FAST, "--trainer.plugins", plugin]) == 2
    assert "AsyncCheckpointIO is not supported" in capsys.readouterr().err


def test_default_root_dir_is_honoured(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["fit", *FAST, "--trainer.default_root_dir", str(tmp_path / "root")]) == 0
    assert (tmp_path / "root" / "medmnist" / "version_0" / "metrics.json").is_file()
    assert not (tmp_path / "lightning_logs").exists()
    # an explicit logger keeps its own save_dir (Lightning's rule)
    args = ["--trainer.default_root_dir", "r2", "--trainer.logger.init_args.save_dir", "mine"]
    assert main(["fit", *FAST, *args]) == 0
    assert (tmp_path / "mine" / "medmnist" / "version_0" / "metrics.json").is_file()


def test_missing_external_and_predict_sources_name_their_option(good_ckpt: Path, tmp_path: Path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["fit", *FAST, "--data.test_source", str(tmp_path / "nope")]) == 2
    assert "--data.test_source" in capsys.readouterr().err
    args = ["predict", "--ckpt_path", str(good_ckpt), "--predict.source", str(tmp_path / "gone"), *FAST]
    assert main([*args, "--trainer.logger", "false"]) == 2
    err = capsys.readouterr().err
    assert "--predict.source" in err and "does not exist" in err and "--data.source" not in err
