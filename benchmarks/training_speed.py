"""Training speed of medmnist-lit side by side with the alternatives (interleaved repeats, medians).

Usage::

    python benchmarks/training_speed.py epochs  [--source DIR] [--repeats 5] [--epochs 4] [--batches 128 16 1]
    python benchmarks/training_speed.py cv      [--source DIR] [--repeats 3] [--epochs 5]
    python benchmarks/training_speed.py loo     [--source DIR] [--repeats 3] [--epochs 5]
    python benchmarks/training_speed.py sklearn --source ../shared/data/medical_mnist_sample
    python benchmarks/training_speed.py compare --source ZIP [--baseline CHECKOUT] [--rounds 3] [--batches 128 16]

``epochs``: seconds per training epoch (logistic head, SGD, 47k training images) of ``fit`` against a bare
PyTorch loop over the same in-memory tensors (float32, already scaled), at batch 128 and 16 (and 1: online). Beside
them: ``fit`` with the learning rate logged every 50 steps instead of every step (Lightning's default
``log_every_n_steps``), the floor of Lightning's automatic optimization (a one-line LightningModule over the same
batches, no callbacks, no logger), and textbook Lightning pipelines over a ``TensorDataset`` and torchvision's
``ImageFolder`` (both with a ``DataLoader`` and per-step logging; ``--no-textbook``, ``--no-imagefolder`` skip them).
Epoch time is the training part only (validation excluded for every variant); the first epoch of each trial is a
warm-up and is not counted. ``--steps N`` caps every variant's epoch at N optimizer steps (online training: an
epoch of 47k steps takes minutes).
``compare``: the ``epochs`` variants (without the textbook ones) each in a fresh process pinned to two cores, and
``fit`` of another checkout (``--baseline``, e.g. a ``git worktree`` of an older commit) beside them, rounds
interleaved. ``cv``: wall time of 5-fold ``cv`` against one ``fit`` of the same config. ``loo``: leave-one-out on 1,000
images against one ``fit`` on those 1,000 images. ``sklearn``: seconds until ``fit`` reaches the test accuracy
of scikit-learn's ``LogisticRegression`` on the same split, against scikit-learn's own fit time.

Without ``--source`` a synthetic folder of 58,954 64×64 JPEGs in the Medical MNIST layout is used (built once
by ``benchmarks/decode.py``'s generator under /tmp). The machine's load is printed: on a shared machine,
compare ratios measured in one run, not absolute seconds across runs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, os.environ.get("BENCH_CHECKOUT", str(REPO)))  # compare: another checkout's medmnist_lit
sys.path.insert(0, str(REPO / "benchmarks"))

SYNTHETIC = Path(tempfile.gettempdir()) / "medmnist_lit_bench"


def _source(path: str | None) -> Path:
    if path:
        return Path(path)
    if not SYNTHETIC.exists():
        from decode import make_synthetic  # the decode benchmark's generator

        make_synthetic(SYNTHETIC)
    return SYNTHETIC


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "?"


def _quiet() -> Any:
    return contextlib.redirect_stdout(io.StringIO())


# ----------------------------------------------------------------------------------------- epochs
class _EpochTimer:
    """Lightning callback: seconds of each training epoch (training only, validation excluded)."""

    def __new__(cls) -> Any:
        import lightning as L

        class Timer(L.Callback):
            def __init__(self) -> None:
                self.times: list[float] = []

            def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
                self.start = time.perf_counter()

            def on_train_batch_end(self, *args: Any) -> None:
                self.end = time.perf_counter()

            def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
                self.times.append(self.end - self.start)

        return Timer()


def _bare(x: Any, y: Any, batch: int, epochs: int, steps: int | None = None) -> list[float]:
    import torch

    torch.manual_seed(0)
    head = torch.nn.Linear(x.shape[1], 6)
    optimizer = torch.optim.SGD(head.parameters(), lr=0.001)
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        for index in torch.randperm(len(x)).split(batch)[:steps]:
            loss = torch.nn.functional.cross_entropy(head(x[index]), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        times.append(time.perf_counter() - start)
    return times


def _medmnist_fit(
    source: Path, batch: int, epochs: int, log_dir: str, steps: int | None = None, log_every: int = 1
) -> list[float]:
    """``fit`` as the command runs it: its DataModule, Classifier, default callbacks and TensorBoard logger."""
    import lightning as L

    from medmnist_lit.data.datamodule import MedMNISTDataModule
    from medmnist_lit.model.classifier import Classifier
    from medmnist_lit.training.fit import default_callbacks, default_logger

    datamodule = MedMNISTDataModule(str(source), test_fraction=0.0, val_fraction=0.2, batch_size=batch)
    model = Classifier(datamodule.num_classes, datamodule.input_shape, datamodule.class_names)
    timer = _EpochTimer()
    trainer = L.Trainer(
        max_epochs=epochs,
        logger=default_logger("bench", save_dir=log_dir),
        callbacks=[*default_callbacks(), timer],
        enable_model_summary=False,
        log_every_n_steps=log_every,  # 1: the training commands' default (the learning rate of every step)
        num_sanity_val_steps=0,
        limit_train_batches=steps,
    )
    with _quiet():
        trainer.fit(model, datamodule=datamodule)
    return timer.times


def _lightning_floor(source: Path, batch: int, epochs: int, steps: int | None = None) -> list[float]:
    """Lightning's automatic optimization alone: a one-line LightningModule on fit's batches, nothing else."""
    import lightning as L
    import torch

    from medmnist_lit.data.datamodule import MedMNISTDataModule

    class Floor(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.head = torch.nn.Linear(64 * 64, 6)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            x, y = batch
            return torch.nn.functional.cross_entropy(self.head(x.flatten(1)), y)

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.001)

    datamodule = MedMNISTDataModule(str(source), test_fraction=0.0, val_fraction=0.2, batch_size=batch)
    timer = _EpochTimer()
    trainer = L.Trainer(
        max_epochs=epochs,
        logger=False,
        callbacks=[timer],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_train_batches=steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    with _quiet():
        trainer.fit(Floor(), datamodule=datamodule)
    return timer.times


def _textbook(loader: Any, epochs: int, log_dir: str, steps: int | None = None) -> list[float]:
    import lightning as L
    import torch
    from lightning.pytorch.loggers import TensorBoardLogger

    class Textbook(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.head = torch.nn.Linear(64 * 64, 6)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            x, y = batch
            loss = torch.nn.functional.cross_entropy(self.head(x.flatten(1)), y)
            self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True)
            return loss

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.001)

    timer = _EpochTimer()
    trainer = L.Trainer(
        max_epochs=epochs,
        logger=TensorBoardLogger(log_dir, name="textbook"),
        callbacks=[timer],
        enable_checkpointing=False,
        enable_model_summary=False,
        limit_train_batches=steps,
    )
    with _quiet():
        trainer.fit(Textbook(), train_dataloaders=loader)
    return timer.times


def run_epochs(args: argparse.Namespace) -> None:
    import torch
    from torch.utils.data import DataLoader, Subset, TensorDataset

    from medmnist_lit.data.datamodule import MedMNISTDataModule

    source = _source(args.source)
    datamodule = MedMNISTDataModule(str(source), test_fraction=0.0, val_fraction=0.2)
    train = datamodule.indices("train")
    images = torch.from_numpy(np.asarray(datamodule.dataset.images)[train])
    x = images.reshape(len(train), -1).float().div_(255)
    y = torch.from_numpy(np.asarray(datamodule.dataset.labels)[train])
    steps = args.steps
    print(f"{len(train)} training images from {source}; torch threads {torch.get_num_threads()}; load {_load()}")
    rows = []
    with tempfile.TemporaryDirectory() as log_dir:
        for batch in args.batches:
            variants = {
                "bare PyTorch loop": lambda b=batch: _bare(x, y, b, args.epochs, steps),
                "medmnist-lit fit": lambda b=batch: _medmnist_fit(source, b, args.epochs, log_dir, steps),
                "fit, LR logged every 50 steps": lambda b=batch: _medmnist_fit(
                    source, b, args.epochs, log_dir, steps, log_every=50
                ),
                "Lightning floor (no callbacks, no logger)": lambda b=batch: _lightning_floor(
                    source, b, args.epochs, steps
                ),
            }
            if args.textbook:
                variants["textbook Lightning (TensorDataset)"] = lambda b=batch: _textbook(
                    DataLoader(TensorDataset(images[:, None].float().div(255), y), batch_size=b, shuffle=True),
                    args.epochs,
                    log_dir,
                    steps,
                )
            samples: dict[str, list[float]] = {name: [] for name in variants}
            for _ in range(args.repeats):  # interleaved: every variant once per round
                for name, run in variants.items():
                    times = run()
                    samples[name].append(statistics.median(times[1:] or times))
            if args.imagefolder:
                from torchvision import datasets, transforms

                folder = datasets.ImageFolder(
                    str(source), transform=transforms.Compose([transforms.Grayscale(), transforms.ToTensor()])
                )
                # ~30x slower and its decoding workers load both cores: measured after the interleaved rounds
                run = lambda b=batch, f=folder: _textbook(  # noqa: E731
                    DataLoader(
                        Subset(f, train.tolist()),
                        batch_size=b,
                        shuffle=True,
                        num_workers=2,
                        persistent_workers=True,
                    ),
                    min(args.epochs, 3),
                    log_dir,
                    steps,
                )
                samples["textbook Lightning (ImageFolder)"] = [
                    statistics.median(run()[1:]) for _ in range(min(args.repeats, 2))
                ]
            bare = statistics.median(samples["bare PyTorch loop"])
            n_steps = min(steps or math.inf, math.ceil(len(train) / batch))
            for name, values in samples.items():
                median = statistics.median(values)
                rows.append((batch, name, median, median / bare, (median - bare) / n_steps, values))
    print("\n| batch | pipeline | s/epoch (median) | × bare loop | µs/step over bare | trials |")
    print("|---|---|---|---|---|---|")
    for batch, name, median, ratio, extra, values in rows:
        trials = ", ".join(f"{v:.2f}" for v in values)
        print(f"| {batch} | {name} | {median:.3f} | {ratio:.2f} | {1e6 * extra:.0f} | {trials} |")
    print(f"\nload after: {_load()}")


# ---------------------------------------------------------------------------------------- compare
def run_trial(args: argparse.Namespace) -> None:
    """One trial in this process (``compare`` starts one per variant and round): prints seconds per epoch."""
    import torch

    source = _source(args.source)
    with tempfile.TemporaryDirectory() as log_dir, contextlib.redirect_stderr(io.StringIO()):
        if args.variant == "bare":
            from medmnist_lit.data.datamodule import MedMNISTDataModule

            datamodule = MedMNISTDataModule(str(source), test_fraction=0.0, val_fraction=0.2)
            train = datamodule.indices("train")
            x = torch.from_numpy(np.asarray(datamodule.dataset.images)[train]).reshape(len(train), -1)
            y = torch.from_numpy(np.asarray(datamodule.dataset.labels)[train]).long()
            times = _bare(x.float().div_(255), y, args.batches[0], args.epochs, args.steps)
        elif args.variant == "floor":
            times = _lightning_floor(source, args.batches[0], args.epochs, args.steps)
        else:
            every = {"fit": {}, "fit50": {"log_every": 50}}[args.variant]
            times = _medmnist_fit(source, args.batches[0], args.epochs, log_dir, args.steps, **every)
    print(statistics.median(times[1:] or times))


def run_compare(args: argparse.Namespace) -> None:
    import subprocess

    variants = {
        "bare PyTorch loop": (REPO, "bare"),
        "medmnist-lit fit": (REPO, "fit"),
        "fit, LR logged every 50 steps": (REPO, "fit50"),
        "Lightning floor (no callbacks, no logger)": (REPO, "floor"),
    }
    if args.baseline:
        variants["fit of --baseline"] = (Path(args.baseline).resolve(), "fit")
    pin = ["taskset", "-c", "0,1"] if sys.platform.startswith("linux") else []

    def trial(checkout: Path, variant: str, batch: int) -> float:
        options = ["--source", str(args.source), "--epochs", str(args.epochs), "--batches", str(batch)]
        options += ["--steps", str(args.steps)] if args.steps else []
        command = [*pin, sys.executable, __file__, "trial", "--variant", variant, *options]
        env = {**os.environ, "BENCH_CHECKOUT": str(checkout)}  # whose medmnist_lit the trial imports
        out = subprocess.run(command, capture_output=True, text=True, env=env)
        try:
            return float(out.stdout.split()[-1])
        except (IndexError, ValueError):
            print(out.stderr[-2000:], file=sys.stderr)
            return math.nan

    print(f"source {args.source}; {args.rounds} rounds, {args.epochs} epochs per trial; load {_load()}")
    trial(REPO, "bare", args.batches[0])  # warm-up: page cache, the decode cache
    rows = []
    for batch in args.batches:
        samples: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, (checkout, variant) in variants.items():
                samples[name].append(trial(checkout, variant, batch))
        bare = statistics.median(samples["bare PyTorch loop"])
        for name, values in samples.items():
            median = statistics.median(values)
            rows.append((batch, name, median, median / bare, values))
    print("\n| batch | pipeline | s/epoch (median) | × bare loop | trials |\n|---|---|---|---|---|")
    for batch, name, median, ratio, values in rows:
        print(f"| {batch} | {name} | {median:.3f} | {ratio:.2f} | {', '.join(f'{v:.2f}' for v in values)} |")
    print(f"\nload after: {_load()}")


# -------------------------------------------------------------------------------------- cv / loo
def _config(source: Path, epochs: int, log_dir: str, name: str, **data: Any) -> dict[str, Any]:
    return {
        "trainer": {
            "max_epochs": epochs,
            "enable_progress_bar": False,
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": log_dir, "name": name, "default_hp_metric": False},
            },
        },
        "data": {"source": str(source), "batch_size": 128, **data},
        "optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.01, "momentum": 0.9}},
    }


def _timed(fn: Any, *args: Any) -> float:
    start = time.perf_counter()
    with _quiet():
        fn(*args)
    return time.perf_counter() - start


def run_ratio(args: argparse.Namespace, loo: bool) -> None:
    from medmnist_lit.lightning_cli import run_cv, run_fit

    source = _source(args.source)
    with tempfile.TemporaryDirectory() as log_dir:
        if loo:
            one = _config(source, args.epochs, log_dir, "fit", subset=1000)
            many = _config(source, args.epochs, log_dir, "loo", subset=1000, split="loo", test_fraction=0.0)
            label = "leave-one-out on 1,000 images (1,000 folds)"
        else:
            one = _config(source, args.epochs, log_dir, "fit")
            many = _config(source, args.epochs, log_dir, "cv", split="kfold", folds=5)
            label = "5-fold cv"
        _timed(run_fit, one)  # warm-up: decode cache, imports
        fits, cvs = [], []
        for _ in range(args.repeats):
            fits.append(_timed(run_fit, one))
            cvs.append(_timed(run_cv, many))
    fit, cv = statistics.median(fits), statistics.median(cvs)
    print(f"source {source}; {args.epochs} epochs; load {_load()}")
    print(f"one fit: {fit:.1f} s (trials {', '.join(f'{v:.1f}' for v in fits)})")
    print(f"{label}: {cv:.1f} s (trials {', '.join(f'{v:.1f}' for v in cvs)})")
    print(f"ratio: {cv / fit:.2f}×")


# ---------------------------------------------------------------------------------------- sklearn
def run_sklearn(args: argparse.Namespace) -> None:
    import lightning as L
    import torch
    from sklearn.linear_model import LogisticRegression

    from medmnist_lit.data.datamodule import MedMNISTDataModule
    from medmnist_lit.model.classifier import Classifier
    from medmnist_lit.training.fit import score

    source = _source(args.source)
    data, split = MedMNISTDataModule(str(source)).dataset, MedMNISTDataModule(str(source)).split
    flat = np.asarray(data.images).reshape(len(data), -1).astype(np.float32) / 255
    train, test = split.train(0), split.test
    fit_times, target = [], 0.0
    for _ in range(args.repeats):
        start = time.perf_counter()
        clf = LogisticRegression(max_iter=1000).fit(flat[train], data.labels[train])
        fit_times.append(time.perf_counter() - start)
        target = float(clf.score(flat[test], data.labels[test]))
    print(f"scikit-learn LogisticRegression(lbfgs): test acc {target:.4f}, fit {statistics.median(fit_times):.2f} s")

    class Reached(L.Callback):
        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            acc = score(pl_module, datamodule.loader(test, shard=False), "test").metrics["test/acc"]
            if acc >= target and not hasattr(self, "seconds"):
                self.seconds, self.epoch, self.acc = time.perf_counter() - self.start, trainer.current_epoch + 1, acc
                trainer.should_stop = True

    # standardised pixels (training-part statistics) make plain SGD converge like scikit-learn's solver
    for name, batch, optimizer in (
        ("SGD lr 0.01 momentum 0.9", 64, {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.01, "momentum": 0.9}}),
        ("Adam lr 3e-4", 256, {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.0003}}),
    ):
        times = []
        datamodule = MedMNISTDataModule(str(source), batch_size=batch, standardize=True)
        for _ in range(args.repeats):
            torch.manual_seed(0)
            model = Classifier(data.num_classes, data.input_shape, list(data.class_names), optimizer=optimizer)
            reached = Reached()
            trainer = L.Trainer(
                max_epochs=200,
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                callbacks=[reached],
                num_sanity_val_steps=0,
            )
            reached.start = time.perf_counter()
            with _quiet():
                trainer.fit(model, datamodule=datamodule)
            times.append(getattr(reached, "seconds", float("nan")))
        print(
            f"medmnist-lit logistic, {name}, batch {batch}, standardized: "
            f"reached {getattr(reached, 'acc', float('nan')):.4f} after "
            f"{getattr(reached, 'epoch', '-')} epochs, {statistics.median(times):.2f} s "
            f"({statistics.median(times) / statistics.median(fit_times):.2f}× scikit-learn)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["epochs", "cv", "loo", "sklearn", "compare", "trial"])
    parser.add_argument("--source", help="image folder (default: synthetic Medical MNIST shape)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batches", type=int, nargs="+", default=[128, 16])
    parser.add_argument("--no-imagefolder", dest="imagefolder", action="store_false")
    parser.add_argument("--no-textbook", dest="textbook", action="store_false")
    parser.add_argument("--steps", type=int, help="cap every epoch at this many optimizer steps (online training)")
    parser.add_argument("--baseline", help="compare: a checkout of another commit whose fit runs beside")
    parser.add_argument("--rounds", type=int, default=3, help="compare: interleaved rounds")
    parser.add_argument("--variant", default="fit", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    import logging

    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    {
        "epochs": run_epochs,
        "cv": lambda a: run_ratio(a, False),
        "loo": lambda a: run_ratio(a, True),
        "sklearn": run_sklearn,
        "compare": run_compare,
        "trial": run_trial,
    }[args.what](args)


if __name__ == "__main__":
    main()
