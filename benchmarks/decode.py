"""Benchmark the decode-once cache: first decode, cached load and a fresh ``prepare`` process.

Usage::

    python benchmarks/decode.py                      # synthetic 58,954 images (built once under /tmp)
    python benchmarks/decode.py --source PATH        # a real folder / zip / npz instead
    python benchmarks/decode.py --repeats 5 --workers 2
    python benchmarks/decode.py --source PATH --baseline ../old-checkout --rounds 5 --workers 2
    python benchmarks/decode.py --source ../shared/data/medical_mnist.zip --pillow-loop --rounds 5 --workers 2
    python benchmarks/decode.py --source ../shared/data/medical_mnist.zip --profile 29477   # stage by stage
    python benchmarks/decode.py --source ../shared/data/medical_mnist.zip --listing --rounds 9 [--baseline ...]

``--pillow-loop`` times, interleaved round by round, each in a fresh process (imports not counted): (a) a plain
Pillow loop over the same image files on the same number of processes (each process opens the zip or reads the
files itself, then ``Image.open(BytesIO(bytes)).convert("L").tobytes()`` per file), (b) this checkout's first
decode (``load_dataset`` into a fresh cache directory) with every file sent through Pillow (``FAST_JPEG =
False``) and (c) the same with the libjpeg-turbo fast path; it checks that (b) and (c) cached identical pixels
and splits (b) and (c) into the decode pass itself and the rest (listing, probe, cache files). With ``--baseline``,
(d) is the other checkout's first decode with its default settings.

``--listing`` times the zip listing stage by stage against :mod:`zipfile`, interleaved in this process: zipfile's
``infolist()`` against ``read_members`` (the struct/numpy central-directory reader), the folder tree member by
member against folder by folder, and all of ``list_zip`` (with ``--baseline``, the other checkout's too, in a
fresh process per round).

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


_PILLOW_LOOP = """
import io, os, sys, time, zipfile
from concurrent.futures import ProcessPoolExecutor
import multiprocessing as mp
from PIL import Image

def work(args):
    source, names = args
    total = 0
    if source.endswith(".zip"):
        with zipfile.ZipFile(source) as zf:
            for name in names:
                total += len(Image.open(io.BytesIO(zf.read(name))).convert("L").tobytes())
    else:
        for name in names:
            with open(os.path.join(source, name), "rb") as f:
                total += len(Image.open(io.BytesIO(f.read())).convert("L").tobytes())
    return total

if __name__ == "__main__":
    source, workers = sys.argv[1], int(sys.argv[2])
    t0 = time.perf_counter()
    if source.endswith(".zip"):
        with zipfile.ZipFile(source) as zf:
            names = [n for n in zf.namelist() if n.lower().endswith((".jpeg", ".jpg", ".png"))]
    else:
        names = [os.path.relpath(os.path.join(d, f), source) for d, _, fs in os.walk(source) for f in fs
                 if f.lower().endswith((".jpeg", ".jpg", ".png"))]
    chunks = [(source, names[i::workers]) for i in range(workers)]
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
        total = sum(pool.map(work, chunks))
    print(time.perf_counter() - t0, len(names), total)
"""

_TIMED_OURS = """
import logging, re, sys, time
sys.path.insert(0, sys.argv[1])
import medmnist_lit.data.decode as decode
from medmnist_lit.data.cache import load_dataset
decode.FAST_JPEG = sys.argv[5] == "fast"
seconds = []
class Grab(logging.Handler):
    def emit(self, record):
        if m := re.match(r"Decoded \\d+ images with \\d+ process\\(es\\) in ([0-9.]+) s", record.getMessage()):
            seconds.append(float(m.group(1)))
decode.logger.addHandler(Grab())
decode.logger.setLevel(logging.DEBUG)
t0 = time.perf_counter()
data = load_dataset(sys.argv[2], cache_dir=sys.argv[3], workers=None if sys.argv[4] == "None" else int(sys.argv[4]))
print(time.perf_counter() - t0, seconds[0], data.meta["cache_path"])
"""


def compare_pillow_loop(source: Path, rounds: int, workers: int | None, baseline: Path | None = None) -> None:
    """Time (a) a plain Pillow loop, (b) our first decode through Pillow only, (c) with the fast path; interleaved.

    With ``baseline`` (another checkout), (d) its first decode too, and its pixels are compared with (c)'s.
    """
    from medmnist_lit.data.workers import available_cpus

    workers = workers or available_cpus()
    names = {"a": "plain Pillow loop", "b": "first decode, Pillow forced", "c": "first decode, fast path"}
    codes = {"b": REPO, "c": REPO}
    if baseline is not None:
        names["d"], codes["d"] = f"first decode, {baseline.name}", baseline.resolve()
    times: dict[str, list[float]] = {k: [] for k in names}
    passes: dict[str, list[float]] = {k: [] for k in codes}
    entries: dict[str, str] = {}
    work = Path(tempfile.mkdtemp(prefix="medmnist_lit_bench_pillow-"))
    try:
        for r in range(rounds):
            order = list(names)[r % len(names) :] + list(names)[: r % len(names)]  # rotate who goes first
            for key in order:
                if key == "a":
                    argv = [sys.executable, "-c", _PILLOW_LOOP, str(source), str(workers)]
                    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout.split()
                    times[key].append(float(out[0]))
                    continue
                cache, path = work / f"{key}-{r}", "pillow" if key == "b" else "fast"
                argv = [sys.executable, "-c", _TIMED_OURS, str(codes[key]), str(source), str(cache), str(workers), path]
                seconds, decode_pass, entry = subprocess.run(
                    argv, check=True, capture_output=True, text=True
                ).stdout.split()
                times[key].append(float(seconds))
                passes[key].append(float(decode_pass))
                if r == 0:
                    entries[key] = entry
                else:
                    shutil.rmtree(cache, ignore_errors=True)
            print(f"round {r + 1}: " + "  ".join(f"{k}={times[k][-1]:.3f}" for k in names) + f"  ({_uptime()})")
        medians = {k: statistics.median(v) for k, v in times.items()}
        for key, label in names.items():
            line = f"({key}) {label:<28} median {medians[key]:.3f} s  {_fmt(times[key])}"
            if key in passes:
                decode_pass = statistics.median(passes[key])
                line += f"  decode pass {decode_pass:.3f} s, rest {medians[key] - decode_pass:.3f} s"
            print(line)
        pixels = {k: np.load(Path(v) / "images.npy", mmap_mode="r") for k, v in entries.items()}
        same = " and ".join(f"({k})" for k in pixels)
        same += f" identical pixels: {all(np.array_equal(pixels['c'], v) for v in pixels.values())}"
        ratios = "  ".join(f"({k})/(a) = {medians[k] / medians['a']:.3f}" for k in dict.fromkeys(["c", *codes]))
        print(f"{ratios}  (c)/(b) = {medians['c'] / medians['b']:.3f}; {same}; {_uptime()}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


_TIMED_LISTING = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from medmnist_lit.data.listing import list_zip
list_zip(Path(sys.argv[2]))
t0 = time.perf_counter()
list_zip(Path(sys.argv[2]))
print(time.perf_counter() - t0)
"""


def compare_listing(source: Path, rounds: int, baseline: Path | None = None) -> None:
    """The zip listing against zipfile, stage by stage, interleaved round by round (medians, milliseconds)."""
    import zipfile

    from medmnist_lit.data.fingerprint import zip_fingerprint
    from medmnist_lit.data.layout import _any_tree, zip_tree
    from medmnist_lit.data.listing import list_zip
    from medmnist_lit.data.zipdir import Members, read_members

    members = read_members(source)
    assert members is not None, "read_members declined this zip: zipfile lists it"
    names, plain, end = members.names, [False] * len(members.names), zip_fingerprint(source)[1]
    stages: dict[str, Any] = {
        "zipfile.ZipFile(source).infolist()": lambda: zipfile.ZipFile(source).infolist(),
        "  and the same as Members (int64 columns)": lambda: Members.from_infos(zipfile.ZipFile(source).infolist()),
        "read_members (struct + numpy), reading the file": lambda: read_members(source),
        "zip_fingerprint (reads and hashes the central directory)": lambda: zip_fingerprint(source),
        "read_members on the fingerprint's bytes (as list_zip)": lambda: read_members(source, end),
        "folder tree member by member (_any_tree, as before)": lambda: _any_tree(names, plain, "x"),
        "folder tree folder by folder (zip_tree)": lambda: zip_tree(names, plain, "x"),
        "list_zip, all of the listing": lambda: list_zip(source),
    }
    if baseline is not None:
        argv = [sys.executable, "-c", _TIMED_LISTING, str(baseline.resolve()), str(source)]
        stages[f"list_zip of {baseline.name} (fresh process)"] = lambda: (
            subprocess.run(argv, check=True, capture_output=True, text=True).stdout
        )
    times: dict[str, list[float]] = {label: [] for label in stages}
    print(_uptime())
    for r in range(rounds):
        labels = list(stages)
        for label in labels[r % len(labels) :] + labels[: r % len(labels)]:  # rotate who goes first
            t0 = time.perf_counter()
            out = stages[label]()
            seconds = time.perf_counter() - t0
            times[label].append(float(out) if isinstance(out, str) else seconds)
    for label, values in times.items():
        print(f"{label:<60} {statistics.median(values) * 1e3:7.1f} ms  " + _fmt([v * 1e3 for v in values]))
    print(f"{len(names):,} members; {_uptime()}")


def profile_stages(source: Path, n: int) -> None:
    """Where a first decode's time goes: listing, and per image (one process, ``n`` images) each step of the loop."""
    import io
    import multiprocessing as mp
    import zipfile
    from concurrent.futures import ProcessPoolExecutor as Pool

    from PIL import Image

    from medmnist_lit.data.decode import decode_range
    from medmnist_lit.data.fast_jpeg import JpegHeaders, decode_plain_jpeg, jpeg_codec, plain_jpeg
    from medmnist_lit.data.listing import list_folder, list_zip
    from medmnist_lit.data.zipdir import read_members

    def timed(label: str, fn: Any, per: int = 0) -> Any:
        t0 = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - t0
        print(f"{label:<58} {seconds * 1e3:8.1f} ms" + (f"  {seconds / per * 1e6:6.2f} µs/image" if per else ""))
        return result

    print(_uptime())
    if source.suffix == ".zip":
        timed("zipfile.ZipFile(source).infolist() (not in the listing)", lambda: zipfile.ZipFile(source).infolist())
        timed("read_members (the listing's central-directory reader)", lambda: read_members(source))
    listing = timed(
        "listing (list_zip / list_folder)", lambda: (list_zip if source.suffix == ".zip" else list_folder)(source)
    )
    n = min(n, len(listing))
    read = listing.reader.read
    data = timed("read the bytes (listing's reader)", lambda: [read(i) for i in range(n)], n)
    codec = jpeg_codec()
    assert codec is not None, "simplejpeg is not installed"
    timed("plain_jpeg (segment walk)", lambda: [plain_jpeg(d) for d in data], n)
    headers = timed("simplejpeg.decode_jpeg_header", lambda: [codec[1](d) for d in data], n)
    timed("JpegHeaders, a new one per image (walk + header)", lambda: [JpegHeaders(codec[1])(d) for d in data], n)
    known = JpegHeaders(codec[1])
    timed("JpegHeaders, one for all images (as per worker block)", lambda: [known(d) for d in data], n)
    with Image.open(io.BytesIO(data[0])) as img:
        mode, size = img.mode, img.size
    row = len(Image.new(mode, size).tobytes())
    ram = np.empty(n * row, np.uint8)
    ram.fill(0)  # touched once (np.zeros maps lazily zeroed pages): no page faults in the timed loops
    view = memoryview(ram)
    timed(
        "decode_plain_jpeg (libjpeg-turbo, into RAM)",
        lambda: [
            decode_plain_jpeg(d, h, view[i * row : (i + 1) * row], mode, size, False, codec[0], None)
            for i, (d, h) in enumerate(zip(data, headers, strict=True))
        ],
        n,
    )
    timed(
        "Pillow: open, convert, tobytes (into RAM)",
        lambda: [Image.open(io.BytesIO(d)).convert(mode).tobytes() for d in data],
        n,
    )
    out = ram.reshape(n, *(size[::-1] if mode == "L" else (size[1], size[0], 3)))
    timed(
        "decode_range, fast path, one process (into RAM)",
        lambda: decode_range(listing.reader, out, 0, n, mode, size, False, True),
        n,
    )
    work = Path(tempfile.mkdtemp(prefix="medmnist_lit_bench_profile-"))
    try:
        mapped = np.lib.format.open_memmap(work / "a.npy", mode="w+", dtype=np.uint8, shape=(n, row))
        flat = mapped.data.cast("B")
        timed(
            "rows copied into a fresh memory map (page faults)",
            lambda: [flat.__setitem__(slice(i * row, (i + 1) * row), view[i * row : (i + 1) * row]) for i in range(n)],
            n,
        )
        fd = os.open(work / "a.npy", os.O_WRONLY)
        block = max(1, (1 << 20) // row)
        timed(
            "rows written with os.pwrite per 1 MiB block (workers' way)",
            lambda: [os.pwrite(fd, view[a * row : min(a + block, n) * row], 128 + a * row) for a in range(0, n, block)],
            n,
        )
        os.close(fd)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def start_pool() -> None:
        with Pool(2, mp_context=mp.get_context("fork")) as pool:
            list(pool.map(abs, range(8)))

    timed("fork a pool of 2 processes, 8 trivial tasks, shut down", start_pool)
    print(_uptime())


def _uptime() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


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
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the --baseline/--pillow-loop/--listing runs")
    parser.add_argument("--pillow-loop", action="store_true", help="compare first decodes with a plain Pillow loop")
    parser.add_argument("--profile", type=int, metavar="N", help="time each stage of a first decode on N images")
    parser.add_argument("--listing", action="store_true", help="time the zip listing against zipfile, by stage")
    args = parser.parse_args()

    from PIL import __version__ as pillow_version

    from medmnist_lit.data.cache import load_dataset
    from medmnist_lit.data.workers import available_cpus

    source = args.source or make_synthetic(args.synthetic_dir)
    print(
        f"cpus={available_cpus()} python={sys.version.split()[0]} numpy={np.__version__} pillow={pillow_version} "
        f"loadavg={os.getloadavg()[0]:.2f}"
    )
    if args.profile:
        profile_stages(source, args.profile)
        return
    if args.listing:
        compare_listing(source, args.rounds, args.baseline)
        return
    if args.pillow_loop:
        compare_pillow_loop(source, args.rounds, args.workers, args.baseline)
        return
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
