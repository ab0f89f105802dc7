"""``medmnist:NAME`` sources: located in the MedMNIST root or downloaded (MD5 checked) from a local http.server."""

from __future__ import annotations

import json
from pathlib import Path

import medmnist
import numpy as np
import pytest
import yaml
from cliruns import run_in
from datagen import make_npz
from medmnist_server import Server, publish

from medmnist_lit.data.cache import load_dataset
from medmnist_lit.data.download import DownloadError
from medmnist_lit.data.layout import DataError
from medmnist_lit.data.medmnist_source import BASE_URL_ENV, locate


def test_downloads_checks_md5_renames_then_reads_in_place(
    server: Server, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = publish(server, monkeypatch, tmp_path, "pneumoniamnist")
    data = load_dataset("medmnist:PneumoniaMNIST", cache_dir=tmp_path / "c1")
    assert sorted(p.name for p in root.iterdir()) == ["pneumoniamnist.npz"]  # no partial folder left
    assert (root / "pneumoniamnist.npz").read_bytes() == body and server.requests == ["/pneumoniamnist.npz?download=1"]
    assert data.class_names == ("normal", "pneumonia") and data.images.shape == (16, 28, 28)
    assert data.meta["medmnist"] == {"flag": "pneumoniamnist", "size": 28, "task": "binary-class"}
    assert np.bincount(np.asarray(data.predefined)).tolist() == [8, 4, 4]  # the official split
    with np.load(root / "pneumoniamnist.npz") as npz:
        assert np.array_equal(data.labels[:8], npz["train_labels"][:, 0])
    del server.files["pneumoniamnist.npz"]  # second use, fresh cache: read in place, the network never asked
    again = load_dataset("medmnist:pneumoniamnist", cache_dir=tmp_path / "c2")
    assert len(server.requests) == 1 and np.array_equal(np.asarray(again.images), np.asarray(data.images))


def test_image_size_picks_the_published_file_of_that_size(
    server: Server, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish(server, monkeypatch, tmp_path, "bloodmnist", size=64)
    data = load_dataset("medmnist:bloodmnist", channels=3, image_size=64)
    assert (root / "bloodmnist_64.npz").is_file() and data.images.shape == (16, 64, 64, 3)
    assert data.class_names[0] == "basophil" and len(data.class_names) == 8
    assert locate("medmnist:bloodmnist", None).path == root / "bloodmnist.npz"  # 28: no size suffix


def test_wrong_md5_is_refused_in_one_line_and_nothing_is_left(
    server: Server, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish(server, monkeypatch, tmp_path, "breastmnist", md5="0" * 32)
    with pytest.raises(DownloadError) as info:
        load_dataset("medmnist:breastmnist")
    message = str(info.value)
    assert "\n" not in message and "MD5" in message and "0" * 32 in message and "breastmnist.npz" in message
    assert list(root.iterdir()) == []


def test_base_url_names_a_mirror(server: Server, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    publish(server, monkeypatch, tmp_path, "breastmnist")
    monkeypatch.setitem(medmnist.INFO["breastmnist"], "url", "http://127.0.0.1:9/unreachable.npz")
    monkeypatch.setenv(BASE_URL_ENV, server.url + "/")
    assert len(load_dataset("medmnist:breastmnist")) == 16
    assert server.requests == ["/breastmnist.npz"]


def test_http_error_is_one_line_naming_the_remedy(server: Server, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(medmnist.INFO["dermamnist"], "url", f"{server.url}/missing.npz")
    with pytest.raises(DownloadError, match=r"HTTP 404.*MEDMNIST_LIT_BASE_URL") as info:
        load_dataset("medmnist:dermamnist")
    assert "\n" not in str(info.value) and list(root.iterdir()) == []


@pytest.mark.parametrize(
    ("source", "size", "expected"),
    [
        ("medmnist:pneumonia", None, "did you mean medmnist:pneumoniamnist?"),
        ("medmnist:organmnist3d", None, "is a 3D MedMNIST dataset"),
        ("medmnist:pneumoniamnist", 32, "at 28, 64, 128, 224 pixels only"),
    ],
)
def test_bad_names_and_sizes_fail_in_one_line(root: Path, source: str, size: int | None, expected: str) -> None:
    with pytest.raises(DataError) as info:
        load_dataset(source, image_size=size)
    message = str(info.value)
    assert expected in message and "\n" not in message
    if size is None:
        assert "bloodmnist, breastmnist, chestmnist" in message and "organmnist3d," not in message
    assert not root.exists()  # nothing fetched, nothing created


def test_a_file_that_is_not_the_published_one_is_refused(root: Path, tmp_path: Path) -> None:
    root.mkdir()
    make_npz(root / "octmnist.npz", num_classes=3, size=28)  # OCTMNIST has 4 classes
    with pytest.raises(DataError, match=r"lists 4 classes for octmnist.*delete it"):
        load_dataset("medmnist:octmnist")


def test_fit_and_test_end_to_end(server: Server, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    publish(server, monkeypatch, tmp_path, "breastmnist")
    cwd = tmp_path / "run"
    cwd.mkdir()
    common = ["--data.source", "medmnist:BreastMNIST", "--data.split", "predefined", "--data.batch_size", "4"]
    run_in(cwd, ["fit", *common, "--trainer.max_epochs", "1", "--trainer.logger.init_args.name", "t"])
    run = cwd / "lightning_logs" / "t" / "version_0"
    assert json.loads((run / "metrics.json").read_text())["n_test"] == 4
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["data"]["source"] == "medmnist:BreastMNIST"  # a name, never made a path of the working dir
    del server.files["breastmnist.npz"]  # the checkpoint's data is found again by name, in the root
    run_in(cwd, ["test", *common, "--ckpt_path", str(run / "checkpoints" / "last.ckpt")])
    assert server.requests == ["/breastmnist.npz?download=1"]


def test_a_name_as_test_source_and_its_fingerprint(
    server: Server, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medmnist_lit.data.datamodule import MedMNISTDataModule

    publish(server, monkeypatch, tmp_path, "breastmnist")
    dm = MedMNISTDataModule("medmnist:breastmnist", test_source="medmnist:BREASTMNIST", split="predefined")
    assert dm.hparams["source"] == "medmnist:breastmnist" and dm.external.class_names == ("malignant", "normal, benign")
    assert dm.fingerprint is not None and len(server.requests) == 1


def test_a_killed_downloads_partial_folder_is_removed_by_the_next(
    server: Server, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish(server, monkeypatch, tmp_path, "breastmnist")
    killed = root / ".breastmnist.npz.partial-abc"  # its owner's lock (a plain file, no longer locked) is free
    killed.mkdir(parents=True)
    (killed / ".lock").write_text("12345\n")
    (killed / "breastmnist.npz").write_bytes(b"half")
    load_dataset("medmnist:breastmnist")
    assert sorted(p.name for p in root.iterdir()) == ["breastmnist.npz"]
