"""Peak memory of ``prepare``, ``fit`` and ``cv`` on a synthetic MedMNIST ``.npz`` of several GB (issue 15).

Writes once, under ``--root`` (default ``/tmp/medmnist_lit_memory``, never the repository), two npz files in
MedMNIST's exact layout (``{train,val,test}_{images,labels}``, uint8 images, N×1 labels): a large one at 224 px RGB
(``--images`` images, 30,000 ≈ 4.5 GB) and a small one at 28 px with the same number of images. The writer streams
each ``.npy`` member into a stored zip one block at a time, so it never holds the array. Then it runs
``medmnist-lit prepare``, ``fit`` (logistic head, 1 epoch, ``--trainer.limit_*`` batches) and ``cv`` (3 folds) on
each, one subprocess at a time, and polls ``/proc/<pid>/status`` of the process and its descendants every 50 ms:

- ``VmHWM``: the kernel's own peak resident set of each process (exact, not sampled); it counts the pages of the
  memory-mapped cache that the process touched, which are page cache (file-backed, clean, reclaimable: the kernel
  drops them under memory pressure rather than swapping) — so it grows with the data read, not with what the
  process must hold;
- ``RssAnon`` (sampled peak, summed over the tree): anonymous memory — what the process really owns (Python,
  torch, numpy arrays, batches); this is the figure the goal "≤ 1 GB + the current batch" is about;
- ``RssFile`` (sampled peak, summed): the file-backed part (the memory map, shared libraries).

Usage::

    python benchmarks/memory_scaling.py [--root DIR] [--images 30000] [--eval-batch N] [--repo CHECKOUT] [--keep]

The files are deleted at the end unless ``--keep`` is given. Needs about 2 × the npz size of free disk (the npz and
its cache entry).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SPLITS = {"train": 0.7, "val": 0.1, "test": 0.2}
CLASSES = 4
BLOCK_BYTES = 64 * 2**20


# ------------------------------------------------------------------------------------------ writing
def synthetic_block(rng: np.random.Generator, labels: np.ndarray, size: int) -> np.ndarray:
    """Smooth random RGB images (an 8×8 pattern scaled up) with a class-dependent tint, plus pixel noise."""
    n = len(labels)
    cells = 8
    pattern = rng.integers(0, 160, (n, cells, cells, 3), dtype=np.uint8)
    scale = -(-size // cells)
    images = np.repeat(np.repeat(pattern, scale, axis=1), scale, axis=2)[:, :size, :size]
    tint = (labels[:, None, None, None] * 20).astype(np.uint8)
    noise = rng.integers(0, 32, (1, size, size, 3), dtype=np.uint8)  # one field per block: cheap, still varied
    return images + tint + np.roll(noise, int(rng.integers(size)), axis=1)


def write_npz(path: Path, n: int, size: int, seed: int = 0) -> Path:
    """A MedMNIST-layout npz of ``n`` RGB images of ``size`` px, streamed block by block into a stored zip."""
    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    tmp = path.with_suffix(".partial")
    counts = [int(n * share) for share in SPLITS.values()]
    counts[0] += n - sum(counts)
    row = size * size * 3
    step = max(1, BLOCK_BYTES // row)
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for split, count in zip(SPLITS, counts, strict=True):
            labels = rng.integers(0, CLASSES, count).astype(np.uint8)
            labels[:CLASSES] = np.arange(CLASSES)  # every class in every split
            header = {"descr": "|u1", "fortran_order": False, "shape": (count, size, size, 3)}
            with zf.open(f"{split}_images.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array_header_1_0(member, header)
                for start in range(0, count, step):
                    member.write(synthetic_block(rng, labels[start : start + step], size).tobytes())
            with zf.open(f"{split}_labels.npy", "w") as member:
                np.lib.format.write_array(member, labels.reshape(-1, 1))
    tmp.rename(path)
    return path


# ----------------------------------------------------------------------------------------- sampling
def _status(pid: int) -> dict[str, int]:
    out = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"):
                    out[key] = int(value.split()[0]) * 1024
    except (OSError, ValueError):
        pass
    return out


def _tree(root: int) -> list[int]:
    """``root`` and its descendants (from each task's ``children`` list)."""
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        for task in Path(f"/proc/{pid}/task").glob("*"):
            with contextlib.suppress(OSError):
                todo += [int(c) for c in (task / "children").read_text().split()]
    return pids


def measure(cmd: list[str], cwd: Path, env: dict[str, str]) -> dict[str, float]:
    """Run ``cmd``; its wall time, the largest VmHWM of its processes and the sampled peaks of the tree's sums."""
    t0 = time.perf_counter()
    with open(cwd / "log.txt", "ab") as log:
        log.write(f"\n$ {' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        hwm: dict[int, int] = {}
        peak = {"RssAnon": 0, "RssFile": 0, "VmRSS": 0}
        while proc.poll() is None:
            sums = dict.fromkeys(peak, 0)
            for pid in _tree(proc.pid):
                status = _status(pid)
                if "VmHWM" in status:
                    hwm[pid] = max(hwm.get(pid, 0), status["VmHWM"])
                for key in sums:
                    sums[key] += status.get(key, 0)
            for key in peak:
                peak[key] = max(peak[key], sums[key])
            time.sleep(0.05)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}); see {cwd / 'log.txt'}")
    return {
        "seconds": time.perf_counter() - t0,
        "VmHWM": max(hwm.values(), default=0) / 2**20,
        "RssAnon": peak["RssAnon"] / 2**20,
        "RssFile": peak["RssFile"] / 2**20,
        "VmRSS": peak["VmRSS"] / 2**20,
    }


# ---------------------------------------------------------------------------------------------- main
def commands(npz: Path, batch: int, limit: int, eval_batch: int | None) -> dict[str, list[str]]:
    base = [sys.executable, "-m", "medmnist_lit"]
    data = ["--data.source", str(npz), "--data.channels", "3"]
    evaluation = [] if eval_batch is None else ["--data.eval_batch_size", str(eval_batch)]
    train = [
        "--model.head", "logistic", "--trainer.max_epochs", "1", "--data.batch_size", str(batch),
        "--trainer.limit_train_batches", str(limit), "--trainer.limit_val_batches", str(limit),
        "--trainer.limit_test_batches", str(limit), "--trainer.enable_progress_bar", "false", *evaluation,
    ]  # fmt: skip
    return {
        "prepare": [*base, "prepare", *data],
        "fit": [*base, "fit", *data, *train, "--data.split", "predefined"],
        "cv": [*base, "cv", *data, *train, "--data.split", "kfold", "--data.folds", "3"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--root", type=Path, default=Path("/tmp/medmnist_lit_memory"))
    parser.add_argument("--images", type=int, default=30_000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--limit", type=int, default=20, help="batches per stage (--trainer.limit_*)")
    parser.add_argument("--eval-batch", type=int, default=None, help="--data.eval_batch_size (default: the product's)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[28, 224])
    parser.add_argument("--steps", nargs="+", default=["prepare", "fit", "cv"])
    parser.add_argument("--keep", action="store_true", help="keep the npz files and caches")
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout to run (e.g. main, to compare)")
    args = parser.parse_args()
    root = args.root.resolve()
    if root == REPO or REPO in root.parents:
        raise SystemExit(f"--root {root} lies inside the repository; pick a folder elsewhere (default /tmp)")
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(args.repo.resolve()), "MEDMNIST_LIT_CACHE": str(root / "cache")}
    rows = []
    try:
        for size in args.sizes:
            t0 = time.perf_counter()
            npz = write_npz(root / f"synthetic_{size}.npz", args.images, size)
            gb = npz.stat().st_size / 1e9
            print(f"{npz.name}: {args.images:,} images {size}×{size}×3, {gb:.2f} GB ({time.perf_counter() - t0:.0f} s)")
            work = root / f"runs_{size}"
            work.mkdir(exist_ok=True)
            for step, cmd in commands(npz, args.batch, args.limit, args.eval_batch).items():
                if step not in args.steps:
                    continue
                result = measure(cmd, work, env)
                rows.append({"size": size, "npz_gb": round(gb, 2), "step": step, **result})
                print(json.dumps(rows[-1]), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    eval_batch = args.eval_batch or 1024  # the DataModule's default eval_batch_size
    batch_mb = {size: max(args.batch, eval_batch) * size * size * 3 * 4 / 2**20 for size in args.sizes}
    print("\n| px | npz | step | wall s | max VmHWM MB | peak RssAnon MB | peak RssFile MB | largest float batch MB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['size']} | {r['npz_gb']:.2f} GB | {r['step']} | {r['seconds']:.1f} | {r['VmHWM']:.0f} | "
            f"{r['RssAnon']:.0f} | {r['RssFile']:.0f} | {batch_mb[r['size']]:.0f} |"
        )


if __name__ == "__main__":
    main()
