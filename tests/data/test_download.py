"""``download``: served from a local http.server thread (no internet), atomic, checked, safe."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from datagen import encode, make_image_folder, make_zip, synthetic_pixels

from medmnist_lit.data.cache import load_dataset
from medmnist_lit.data.download import DEFAULT_URL, DownloadError, download
from medmnist_lit.data.layout import DataError

CLASSES = {"AbdomenCT": 3, "BreastMRI": 2, "CXR": 4}
TOP = "Medical-MNIST-Classification-master"


def make_archive(tmp_path: Path, classes: dict[str, int] = CLASSES, extra: dict[str, bytes] | None = None) -> bytes:
    """A zip laid out like GitHub's archive of the original repository, plus unrelated files."""
    repo = tmp_path / "repo"
    make_image_folder(repo / "resized", classes, junk=True)
    (repo / "README.md").write_text("# Medical MNIST")
    (repo / "notebook.ipynb").write_text("{}")
    (repo / "images").mkdir()
    (repo / "images" / "plot.png").write_bytes(encode(synthetic_pixels(1)[0], "PNG"))
    return make_zip(repo, tmp_path / "archive.zip", prefix=f"{TOP}/", extra=extra).read_bytes()


@dataclass
class Server:
    body: bytes = b""
    mode: str = "ok"  # "ok", "no-length", "drop", "404"
    requests: list[str] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # http.server API name
            state.requests.append(self.path)
            if state.mode == "404":
                self.send_error(404, "Not Found")
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/zip")
            if state.mode != "no-length":
                self.send_header("Content-Length", str(len(state.body)))
            self.end_headers()
            if state.mode == "drop":  # promise everything, send half, hang up
                self.wfile.write(state.body[: len(state.body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(state.body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/master.zip"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


def visible(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_default_url_is_the_github_archive() -> None:
    assert DEFAULT_URL == "https://github.com/apolanco3225/Medical-MNIST-Classification/archive/refs/heads/master.zip"


@pytest.mark.parametrize("mode", ["ok", "no-length"])
def test_download_extracts_only_resized(tmp_path: Path, server: Server, mode: str) -> None:
    server.body, server.mode = make_archive(tmp_path), mode
    root = tmp_path / "data"
    path = download(root, server.url, expected_classes=3, expected_count=9)
    assert path == root / "medical_mnist"
    assert visible(root) == ["medical_mnist"]  # no partial archive or folder left behind
    assert visible(path) == ["AbdomenCT", "BreastMRI", "CXR"]  # junk, README, notebook, images/ not extracted
    assert visible(path / "BreastMRI") == ["000000.jpeg", "000001.jpeg"]
    data = load_dataset(path, cache_dir=tmp_path / "cache")
    assert data.counts() == CLASSES


def test_existing_copy_is_reused_unless_forced(tmp_path: Path, server: Server) -> None:
    server.body = make_archive(tmp_path)
    root = tmp_path / "data"
    download(root, server.url, expected_classes=3, expected_count=9)
    assert download(root, server.url, expected_classes=3, expected_count=9) == root / "medical_mnist"
    assert len(server.requests) == 1
    download(root, server.url, expected_classes=3, expected_count=9, force=True)
    assert len(server.requests) == 2 and visible(root) == ["medical_mnist"]


def test_incomplete_existing_copy_is_not_reused(tmp_path: Path, server: Server) -> None:
    make_image_folder(tmp_path / "data" / "medical_mnist", {"A": 1, "B": 1})
    with pytest.raises(DataError, match=r"medical_mnist exists but has 2 classes .* expected 3.*--force"):
        download(tmp_path / "data", server.url, expected_classes=3, expected_count=None)
    assert server.requests == []


def test_dropped_connection_leaves_nothing(tmp_path: Path, server: Server) -> None:
    server.body, server.mode = make_archive(tmp_path), "drop"
    root = tmp_path / "data"
    with pytest.raises(DownloadError, match=rf"downloading {server.url} (failed|stopped).*Kaggle"):
        download(root, server.url, expected_classes=3, expected_count=9)
    assert visible(root) == []  # neither medical_mnist/ nor a partial file


def test_wrong_counts_are_an_error(tmp_path: Path, server: Server) -> None:
    server.body = make_archive(tmp_path)
    root = tmp_path / "data"
    with pytest.raises(DownloadError, match=r"has 3 classes .*expected 6 and has 9 images, expected 58,954"):
        download(root, server.url)
    assert visible(root) == []
    assert download(root, server.url, expected_classes=None, expected_count=None).is_dir()


def test_http_error_names_url_and_hint(tmp_path: Path, server: Server) -> None:
    server.mode = "404"
    with pytest.raises(DownloadError, match=rf"{server.url} failed: HTTP 404.*Kaggle"):
        download(tmp_path / "data", server.url)
    assert visible(tmp_path / "data") == []


def test_unreachable_server(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/master.zip"
    with pytest.raises(DownloadError, match=rf"downloading {url} failed: .*Kaggle"):
        download(tmp_path / "data", url, timeout=5)
    assert visible(tmp_path / "data") == []


def test_not_a_zip(tmp_path: Path, server: Server) -> None:
    server.body = b"<html>rate limited</html>"
    with pytest.raises(DownloadError, match="not a valid zip archive"):
        download(tmp_path / "data", server.url)
    assert visible(tmp_path / "data") == []


def test_archive_without_resized_folder(tmp_path: Path, server: Server) -> None:
    folder = make_image_folder(tmp_path / "flat", CLASSES)
    server.body = make_zip(folder, tmp_path / "flat.zip", prefix="x/").read_bytes()
    with pytest.raises(DownloadError, match=r"no '\*/resized/' folder"):
        download(tmp_path / "data", server.url)


def test_path_traversal_is_refused(tmp_path: Path, server: Server) -> None:
    evil = {f"{TOP}/resized/../../../evil.jpeg": b"x"}
    server.body = make_archive(tmp_path, extra=evil)
    root = tmp_path / "deep" / "data"
    with pytest.raises(DownloadError, match=r"unsafe entry .*evil\.jpeg"):
        download(root, server.url, expected_classes=3, expected_count=9)
    assert visible(root) == [] and not list(tmp_path.rglob("evil.jpeg"))


def test_archive_members_are_real_images(tmp_path: Path, server: Server) -> None:
    repo = tmp_path / "repo"
    for name in ("A", "B"):
        (repo / "resized" / name).mkdir(parents=True)
        (repo / "resized" / name / "1.jpeg").write_text("version https://git-lfs.github.com/spec/v1\n")
    server.body = make_zip(repo, tmp_path / "lfs.zip", prefix=f"{TOP}/").read_bytes()
    with pytest.raises(DownloadError, match=r"not images \(e\.g\. A/1\.jpeg"):
        download(tmp_path / "data", server.url, expected_classes=2, expected_count=2)
