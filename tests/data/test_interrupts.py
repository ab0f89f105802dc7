"""Interrupted commands clean up: SIGKILL and Ctrl-C during ``prepare`` and ``download`` (issue 10, point 4).

The commands run as subprocesses in their own session (so Ctrl-C can go to the whole process group, as a
terminal sends it). To interrupt them at a known point without timing guesses:

- ``prepare`` decodes a folder whose last image is a named pipe (FIFO): the worker process that reaches it
  blocks in ``open``/``read`` until the test opens the pipe's write end, which the test does (non-blocking,
  so it succeeds only once a reader waits) and then holds open, so the decode stays in progress;
- ``download`` fetches from a server on 127.0.0.1 that sends half the archive and then waits for the test.
"""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from datagen import make_image_folder, make_zip

from medmnist_lit.cli import main
from medmnist_lit.data.download import download

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="uses /proc, FIFOs and process groups")

CLASSES = {"AbdomenCT": 150, "CXR": 149}  # + one FIFO: 300 images, several chunks per worker
TOP = "Medical-MNIST-Classification-master"
WAIT = 60.0  # seconds to wait for a subprocess to reach a state (far above need; only bounds a broken run)


# ------------------------------------------------------------------------------------------- processes
def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat from the state on (state, ppid, pgrp, ...); ``None`` if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def descendants(pid: int) -> list[int]:
    """Living processes below ``pid`` (found by their parent's pid)."""
    children: dict[int, list[int]] = {}
    for p in _all_pids():
        fields = _stat(p)
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(p)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return [p for p in found if alive(p)]


def group(pgid: int) -> list[int]:
    """Living processes of the process group ``pgid`` (the command's session: it and everything it started)."""
    return [p for p in _all_pids() if (f := _stat(p)) is not None and f[0] not in ("Z", "X") and int(f[2]) == pgid]


def wait_until(condition: Callable[[], object], proc: subprocess.Popen[bytes], what: str, err: Path) -> None:
    """Poll ``condition`` while ``proc`` runs; fail (with its stderr) if it exits first or never gets there."""
    deadline = time.monotonic() + WAIT
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the command exited ({proc.returncode}) before {what}:\n{err.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"the command never reached {what}:\n{err.read_text()}")
        time.sleep(0.02)


def none_survive(pids: list[int], pgid: int) -> list[int]:
    """Wait up to 5 s for ``pids`` and the group ``pgid`` to be gone; returns the survivors."""
    deadline = time.monotonic() + 5.0
    while True:
        survivors = sorted({p for p in pids if alive(p)} | set(group(pgid)))
        if not survivors or time.monotonic() > deadline:
            return survivors
        time.sleep(0.05)


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def start(args: list[str], err: Path) -> subprocess.Popen[bytes]:
    """``python -m medmnist_lit <args>`` in a new session (its own process group), stderr to ``err``.

    The command starts as from a terminal, with SIGINT neither ignored nor blocked, whatever this test process's own
    state: a child inherits both across exec (and Python installs no KeyboardInterrupt for an ignored SIGINT), and
    in some full-suite runs an earlier test left one of them behind, so Ctrl-C never reached the command.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # a handler resets to default at exec
    mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "medmnist_lit", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err.open("wb"),
            start_new_session=True,
        )
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        signal.signal(signal.SIGINT, previous)


def one_interrupt_line(stderr: str, expected: str) -> None:
    """No traceback (from the command or any worker), and exactly one line saying it was interrupted, last."""
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    lines = [line for line in stderr.replace("\r", "\n").splitlines() if "interrupted" in line]
    assert lines == [expected], stderr
    assert stderr.rstrip().endswith(expected), stderr


# ------------------------------------------------------------------------------------------- prepare
@dataclass
class Held:
    """A ``prepare`` subprocess blocked mid-decode on the FIFO, and the FIFO's write end that keeps it there."""

    proc: subprocess.Popen[bytes]
    workers: list[int]
    fd: int


@pytest.fixture
def source(tmp_path: Path) -> Iterator[Path]:
    src = make_image_folder(tmp_path / "src", CLASSES)
    os.mkfifo(src / "CXR" / "zzz_stuck.jpeg")  # sorts last: read by a worker, never by the parent's size probe
    yield src


def hold_mid_decode(source: Path, cache_dir: Path, err: Path) -> Held:
    proc = start(["prepare", "--data.source", str(source), "--data.cache_dir", str(cache_dir), "--workers", "2"], err)
    fd = -1

    def reader_waits() -> bool:
        nonlocal fd
        try:
            fd = os.open(source / "CXR" / "zzz_stuck.jpeg", os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: nobody has the pipe open for reading yet
                raise
            return False
        return True

    try:
        wait_until(reader_waits, proc, "a worker reading the FIFO", err)
        workers = descendants(proc.pid)
        assert len(workers) == 2, (workers, err.read_text())
        # Forked (not spawned) workers: prepare did not import torch, so this is the fast path users get.
        parent_cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert all(Path(f"/proc/{w}/cmdline").read_bytes() == parent_cmdline for w in workers)
        assert [p.name for p in cache_dir.iterdir() if p.name.startswith(".tmp-")], "no build folder"
    except BaseException:
        kill_all([proc.pid, *descendants(proc.pid)])
        proc.wait()
        if fd >= 0:
            os.close(fd)
        raise
    return Held(proc, workers, fd)


def test_sigkill_during_prepare_leaves_no_process_and_next_prepare_cleans_up(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache_dir = tmp_path / "cache"
    held = hold_mid_decode(source, cache_dir, tmp_path / "stderr.txt")
    try:
        os.kill(held.proc.pid, signal.SIGKILL)
        held.proc.wait()
        survivors = none_survive(held.workers, held.proc.pid)
    finally:
        os.close(held.fd)  # lets a surviving worker (old code) finish reading, so it can be killed
        kill_all([*held.workers, *group(held.proc.pid)])
    assert survivors == [], "decoder processes outlived their killed parent"
    assert [p.name for p in cache_dir.iterdir() if p.name.startswith(".tmp-")], "the killed build left nothing?"

    (source / "CXR" / "zzz_stuck.jpeg").unlink()
    assert main(["prepare", "--data.source", str(source), "--data.cache_dir", str(cache_dir)]) == 0
    assert "Decoded in" in capsys.readouterr().out
    left = sorted(p.name for p in cache_dir.iterdir())
    assert len(left) == 1 and not left[0].startswith("."), left  # the entry; the killed build's folder is gone


def test_ctrl_c_during_prepare_prints_one_line_and_leaves_nothing(source: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    (cache_dir / "unrelated.txt").write_text("kept")
    err = tmp_path / "stderr.txt"
    held = hold_mid_decode(source, cache_dir, err)
    try:
        # Let the other worker finish its chunks and wait for more: Ctrl-C then finds one worker idle and one
        # mid-image, the two places a worker could print a traceback.
        wait_until(lambda: all((_stat(w) or ["S"])[0] == "S" for w in held.workers), held.proc, "idle workers", err)
        os.killpg(held.proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
        returncode = held.proc.wait(WAIT)
        survivors = none_survive(held.workers, held.proc.pid)
    finally:
        os.close(held.fd)
        kill_all([held.proc.pid, *held.workers, *group(held.proc.pid)])
    assert returncode == 130, err.read_text()
    one_interrupt_line(err.read_text(), "medmnist-lit prepare: interrupted; nothing was cached")
    assert survivors == []
    assert sorted(p.name for p in cache_dir.iterdir()) == ["unrelated.txt"]


# ------------------------------------------------------------------------------------------- download
@dataclass
class Server:
    """Serves ``body``; while ``hold`` is set, sends half of it and waits for ``resume``."""

    body: bytes = b""
    url: str = ""
    hold: bool = True
    half_sent: threading.Event = field(default_factory=threading.Event)
    resume: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    repo = tmp_path / "repo"
    make_image_folder(repo / "resized", CLASSES)
    (repo / "README.md").write_text("# Medical MNIST")
    state = Server(body=make_zip(repo, tmp_path / "archive.zip", prefix=f"{TOP}/").read_bytes())

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # http.server API name
            self.send_response(200)
            self.send_header("Content-Type", "application/zip")
            self.send_header("Content-Length", str(len(state.body)))
            self.end_headers()
            half = len(state.body) // 2 if state.hold else len(state.body)
            try:
                self.wfile.write(state.body[:half])
                self.wfile.flush()
                state.half_sent.set()
                if half < len(state.body):
                    state.resume.wait(WAIT)
                    self.wfile.write(state.body[half:])
            except OSError:  # the client was killed
                pass

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/master.zip"
    try:
        yield state
    finally:
        state.resume.set()
        httpd.shutdown()
        httpd.server_close()


def hidden(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith(".medical_mnist."))


def test_sigkill_during_download_next_download_cleans_up(server: Server, tmp_path: Path) -> None:
    root = tmp_path / "data"
    err = tmp_path / "stderr.txt"
    proc = start(["download", "--root", str(root), "--url", server.url], err)
    try:
        wait_until(lambda: server.half_sent.is_set() and root.is_dir() and hidden(root), proc, "mid-download", err)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert hidden(root), "the killed download left nothing?"

    server.hold = False
    umask = os.umask(0o022)
    try:
        final = download(root, server.url, expected_classes=2, expected_count=sum(CLASSES.values()))
    finally:
        os.umask(umask)
    assert sorted(p.name for p in root.iterdir()) == ["medical_mnist"]  # the killed run's partial files are gone
    modes = {stat.S_IMODE(p.stat().st_mode) for p in [final, *final.iterdir()]}
    assert modes == {0o755}, [oct(m) for m in modes]  # like any mkdir under umask 022, not mkdtemp's 0700
    assert {stat.S_IMODE(p.stat().st_mode) for p in final.glob("*/*")} == {0o644}


def test_ctrl_c_during_download_prints_one_line_and_leaves_nothing(server: Server, tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (root / "unrelated.txt").write_text("kept")
    err = tmp_path / "stderr.txt"
    proc = start(["download", "--root", str(root), "--url", server.url], err)
    try:
        wait_until(lambda: server.half_sent.is_set() and hidden(root), proc, "mid-download", err)
        os.killpg(proc.pid, signal.SIGINT)
        returncode = proc.wait(WAIT)
    finally:
        proc.kill()
        proc.wait()
    assert returncode == 130, err.read_text()
    one_interrupt_line(err.read_text(), "medmnist-lit download: interrupted; nothing was downloaded")
    assert sorted(p.name for p in root.iterdir()) == ["unrelated.txt"]


# ------------------------------------------------------------------------------------------- owners
def test_builds_of_live_processes_are_kept_those_of_dead_ones_removed(tmp_path: Path) -> None:
    from medmnist_lit.data.cache import load_dataset
    from medmnist_lit.utils.processes import claim

    src = make_image_folder(tmp_path / "src", {"A": 3, "B": 3})
    cache_dir = tmp_path / "cache"
    live, dead = cache_dir / ".tmp-live", cache_dir / ".tmp-dead"
    for folder in (live, dead):
        folder.mkdir(parents=True)
        (folder / "images.npy").write_bytes(b"half written")
    live_fd, dead_fd = claim(live), claim(dead)
    assert live_fd is not None and dead_fd is not None
    os.close(dead_fd)  # what the kernel does for a killed owner: the lock goes, the files stay
    assert load_dataset(src, cache_dir=cache_dir).meta["from_cache"] is False
    assert (live / "images.npy").exists() and not dead.exists()  # a running build is never touched
    os.close(live_fd)
    assert load_dataset(src, cache_dir=cache_dir).meta["from_cache"] is True
    assert not live.exists()  # removed by the next load, even one served from the cache


def test_downloads_of_live_processes_are_kept_those_of_dead_ones_removed(server: Server, tmp_path: Path) -> None:
    from medmnist_lit.utils.processes import claim

    root = tmp_path / "data"
    live, dead = root / ".medical_mnist.partial-live", root / ".medical_mnist.partial-dead"
    for folder in (live, dead):
        folder.mkdir(parents=True)
        (folder / "archive.zip").write_bytes(b"PK half")
    live_fd, dead_fd = claim(live), claim(dead)
    assert live_fd is not None and dead_fd is not None
    os.close(dead_fd)
    server.hold = False
    download(root, server.url, expected_classes=2, expected_count=sum(CLASSES.values()))
    assert hidden(root) == [live.name]
    os.close(live_fd)
    download(root, server.url, expected_classes=2, expected_count=sum(CLASSES.values()))  # already there
    assert sorted(p.name for p in root.iterdir()) == ["medical_mnist"]
