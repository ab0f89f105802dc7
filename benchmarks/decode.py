"""Benchmark the decode-once cache: first decode, cached load and a fresh ``prepare`` process.

Usage::

    python benchmarks/decode.py                      # synthetic 58,954 images (built once under /tmp)
    python benchmarks/decode.py --source PATH        # a real folder / zip / npz instead
    python benchmarks/decode.py --repeats 5 --workers 2
    python benchmarks/decode.py --source PATH --baseline ../old-checkout --rounds 5 --workers 2

``--baseline`` compares first decodes only: this checkout against another one (e.g. a ``git worktree`` of an
older commit), interleaved round by round, each in a fresh process and a fresh cache directory (the time is
taken around ``load_dataset`` inside the process, so imports are not counted), and checks that both decode
the same pixels.

The synthetic set mimics Medical MNIST: 6 class folders (58,954 files) of 64×64 grayscale JPEGs made of smooth
random blobs plus noise. Files average ~1.4 KB like the real ones (1.35 KB), and Pillow decodes them at about
the same speed (measured 57.8 vs 55.7 µs per image against the 3,000-image real sample), so timings transfer.
The set is written once to --synthetic-dir and reused. Timings are medians; each first decode uses a fresh
cache directory. On a shared machine, check the printed load average.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from synthetic import blobs  # noqa: E402

CLASSES = {"AbdomenCT": 10000, "BreastMRI": 8954, "CXR": 10000, "ChestCT": 10000, "Hand": 10000, "HeadCT": 10000}


def _write_class(args: tuple[str, str, int, int]) -> int:
    from PIL import Image

    root, name, count, seed = args
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for start in range(0, count, 1000):
        batch = blobs(rng, min(1000, count - start), noise=(6, 22))
        for j, pixels in enumerate(batch):
            Image.fromarray(pixels).save(folder / f"{start + j:06d}.jpeg", quality=75)
    return count


def make_synthetic(root: Path, classes: dict[str, int] = CLASSES) -> Path:
    """Build the synthetic folder once (reused when complete); returns its path."""
    done = root / ".complete"
    if done.exists():
        return root
    if root.exists():
        shutil.rmtree(root)
    t0 = time.perf_counter()
    jobs = [(str(root), name, count, i) for i, (name, count) in enumerate(classes.items())]
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        total = sum(pool.map(_write_class, jobs))
    done.touch()
    print(f"built {total:,} synthetic JPEGs in {root} ({time.perf_counter() - t0:.1f} s)")
    return root


def _median_time(fn, repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def _fmt(times: list[float]) -> str:
    return "[" + ", ".join(f"{t:.3f}" for t in times) + "]"


def _prepare_process(source: Path, cache_dir: Path, repeats: int) -> tuple[float, list[float]]:
    """Wall time of ``medmnist-lit prepare --data.source SOURCE`` in a fresh process (imports included)."""
    command = [sys.executable, "-m", "medmnist_lit", "prepare", "--data.source", str(source)]
    command += ["--data.cache_dir", str(cache_dir)]
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))

    def run() -> None:
        out = subprocess.run(command, check=True, env=env, capture_output=True, text=True).stdout
        assert "from the cache" in out, out

    return _median_time(run, repeats)


_TIMED_DECODE = """
import sys, time
sys.path.insert(0, sys.argv[1])
from medmnist_lit.data.cache import load_dataset
t0 = time.perf_counter()
data = load_dataset(sys.argv[2], cache_dir=sys.argv[3], workers=None if sys.argv[4] == "None" else int(sys.argv[4]))
print(time.perf_counter() - t0, data.meta["cache_path"])
"""


def compare_first_decode(source: Path, baseline: Path, rounds: int, workers: int | None) -> None:
    """Time first decodes of ``source`` by ``baseline`` and by this checkout, interleaved; print the medians."""
    codes = {"baseline": baseline.resolve(), "this": REPO}
    times: dict[str, list[float]] = {name: [] for name in codes}
    entries: dict[str, str] = {}
    work = Path(tempfile.mkdtemp(prefix="medmnist_lit_bench_compare-"))
    try:
        for r in range(rounds):
            for name, code in codes.items() if r % 2 == 0 else reversed(codes.items()):
                cache = work / f"{name}-{r}"
                argv = [sys.executable, "-c", _TIMED_DECODE, str(code), str(source), str(cache), str(workers)]
                seconds, entry = subprocess.run(argv, check=True, capture_output=True, text=True).stdout.split()
                times[name].append(float(seconds))
                entries.setdefault(name, entry)
        for name, code in codes.items():
            print(f"{name:<8} {code}: first decode median {statistics.median(times[name]):.3f} s  {_fmt(times[name])}")
        ratio = statistics.median(times["this"]) / statistics.median(times["baseline"])
        same = np.array_equal(
            np.load(Path(entries["baseline"]) / "images.npy", mmap_mode="r"),
            np.load(Path(entries["this"]) / "images.npy", mmap_mode="r"),
        )
        print(f"this / baseline = {ratio:.3f}; identical pixels: {same}; loadavg={os.getloadavg()[0]:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, help="a real folder/zip/npz instead of the synthetic set")
    parser.add_argument("--synthetic-dir", type=Path, default=Path(tempfile.gettempdir()) / "medmnist_lit_bench")
    parser.add_argument("--repeats", type=int, default=3, help="first decodes (each into a fresh cache dir)")
    parser.add_argument("--cached-repeats", type=int, default=9)
    parser.add_argument("--process-repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--zip", action="store_true", help="also time a zip made from the source and compare")
    parser.add_argument("--baseline", type=Path, help="another checkout: compare first decodes with it only")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the --baseline comparison")
    args = parser.parse_args()

    from PIL import __version__ as pillow_version

    from medmnist_lit.data.cache import load_dataset
    from medmnist_lit.data.decode import available_cpus

    source = args.source or make_synthetic(args.synthetic_dir)
    print(
        f"cpus={available_cpus()} python={sys.version.split()[0]} numpy={np.__version__} pillow={pillow_version} "
        f"loadavg={os.getloadavg()[0]:.2f}"
    )
    if args.baseline is not None:
        compare_first_decode(source, args.baseline, args.rounds, args.workers)
        return
    sources = [source]
    work = Path(tempfile.mkdtemp(prefix="medmnist_lit_bench_cache-"))
    try:
        if args.zip and source.is_dir():
            zip_path = work / f"{source.name}.zip"
            shutil.make_archive(str(zip_path.with_suffix("")), "zip", root_dir=source.parent, base_dir=source.name)
            sources.append(zip_path)
        reference = None
        for src in sources:
            print(f"\n== {src}")
            caches = [work / f"cache-{src.suffix or 'dir'}-{i}" for i in range(args.repeats)]
            fresh = iter(caches)

            def first_decode(src: Path = src, fresh: Any = fresh) -> None:
                load_dataset(src, cache_dir=next(fresh), workers=args.workers)

            first, times = _median_time(first_decode, args.repeats)
            data = load_dataset(src, cache_dir=caches[0])
            print(f"images: {len(data):,} {data.images.shape[1:]}  counts: {data.counts()}")
            print(f"first decode   median {first:.3f} s  {_fmt(times)}")
            cached, times = _median_time(
                lambda src=src, cache=caches[0]: load_dataset(src, cache_dir=cache), args.cached_repeats
            )
            print(f"cached load    median {cached:.3f} s  {_fmt(times)}  speed-up {first / cached:.0f}x")
            proc, times = _prepare_process(src, caches[0], args.process_repeats)
            print(f"`medmnist-lit prepare` process (cached) median {proc:.3f} s  {_fmt(times)}")
            if reference is None:
                reference = data
            else:
                same = (
                    np.array_equal(reference.images, data.images)
                    and np.array_equal(reference.labels, data.labels)
                    and np.array_equal(reference.ids, data.ids)
                    and reference.class_names == data.class_names
                )
                print(f"identical to the folder (images, labels, ids, classes): {same}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
