"""A local MedMNIST: tiny npz files in MedMNIST's layout, served by an http.server on 127.0.0.1, with INFO patched.

``server`` and ``root`` are pytest fixtures (import them into a test module to use them).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import medmnist
import pytest
from datagen import make_npz

from medmnist_lit.data.medmnist_source import BASE_URL_ENV, ROOT_ENV


@dataclass
class Server:
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # http.server API name
            state.requests.append(self.path)
            body = state.files.get(self.path.split("?")[0].lstrip("/"))
            if body is None:
                self.send_error(404, "Not Found")
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty MedMNIST root, named by ``$MEDMNIST_ROOT``."""
    path = tmp_path / "medmnist_root"
    monkeypatch.setenv(ROOT_ENV, str(path))
    monkeypatch.delenv(BASE_URL_ENV, raising=False)
    return path


def publish(
    server: Server,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    flag: str,
    size: int = 28,
    md5: str | None = None,
    sizes: tuple[int, int, int] = (8, 4, 4),
    **options: Any,
) -> bytes:
    """Serve a tiny npz in MedMNIST's layout as ``flag`` at ``size``, with INFO's URL and MD5 patched to it.

    The file has INFO's channels and classes (one 0/1 column per label for a multi-label task), ``sizes`` images
    in its train, val and test splits; ``options`` go to :func:`datagen.make_npz`.
    """
    info = medmnist.INFO[flag]
    classes = len(info["label"])
    multilabel = classes if info["task"].startswith("multi-label") else 0
    suffix = "" if size == 28 else f"_{size}"
    path = make_npz(
        tmp_path / f"made-{flag}{suffix}.npz",
        *sizes,
        num_classes=classes,
        size=size,
        rgb=info["n_channels"] == 3,
        multilabel=multilabel,
        **options,
    )
    body = path.read_bytes()
    server.files[f"{flag}{suffix}.npz"] = body
    monkeypatch.setitem(info, f"url{suffix}", f"{server.url}/{flag}{suffix}.npz?download=1")
    monkeypatch.setitem(info, f"MD5{suffix}", md5 or hashlib.md5(body).hexdigest())
    return body
