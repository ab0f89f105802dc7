"""The ``medmnist-lit`` command: a thin dispatcher over functions that return results.

Training commands are LightningCLI parsers (:mod:`medmnist_lit.lightning_cli`); data commands use small
jsonargparse parsers and import neither torch nor Lightning, so ``prepare`` on cached data starts fast.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger("medmnist_lit")

USAGE = """usage: medmnist-lit <command> [options]   (medmnist-lit <command> --help for its options)

training (LightningCLI: --config FILE.yaml, dotted overrides, --print_config):
  fit         train, then test the best checkpoint on the held-out test split
  validate    score a checkpoint (--ckpt_path) on the validation fold
  test        score a checkpoint (--ckpt_path) on the test split
  predict     write a checkpoint's class probabilities for its test split or any folder of images
  cv          k-fold / leave-one-out / grouped cross-validation with aggregated estimates
  lr-find     Lightning's learning-rate range test: plot and suggestion
  batch       run an experiment spec (variants × seeds), resumably, with result tables and figures
  report      rebuild a batch's tables and figures from its directory

data:
  prepare     decode a source into the cache and print the count per class
  download    fetch Medical MNIST (58,954 images) from its public copy
  audit       leakage audit: exact and near duplicates within the data and across its split

examples:
  medmnist-lit fit --config experiments/seed_logistic.yaml
  medmnist-lit fit --config experiments/seed_mlp.yaml --data.source ~/data/medical_mnist --trainer.max_epochs 5
  medmnist-lit prepare --data.source ~/Downloads/medical_mnist.zip
"""


#: Commands that import PyTorch and Lightning (seconds): they say so at once.
HEAVY = ("fit", "cv", "validate", "test", "predict", "lr-find", "batch", "audit")


class UsageError(Exception):
    """A problem with how the command was called (reported without a traceback)."""


# ------------------------------------------------------------------------------------------ training
def _training(command: str, args: Sequence[str]) -> Any:
    # Lightning's own use of deprecated jsonargparse APIs is not the user's concern
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    from medmnist_lit.lightning_cli import build_cli

    return build_cli(command, list(args))


def _run_command(command: str, args: Sequence[str]) -> int:
    # fit and cv run as a RunJob, the same function the batch runner and the Python API call
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    from medmnist_lit.jobs import RunJob, run_job
    from medmnist_lit.lightning_cli import resolve_config

    run_job(RunJob(command, resolve_config(command, list(args))), record_failures=False)
    return 0


def fit_command(args: Sequence[str]) -> int:
    """``medmnist-lit fit``: train, test the best checkpoint, write the run directory."""
    return _run_command("fit", args)


def cv_command(args: Sequence[str]) -> int:
    """``medmnist-lit cv``: one fresh model per fold, per-fold logs, aggregated estimates, out-of-fold predictions."""
    return _run_command("cv", args)


def _evaluate_command(command: str, args: Sequence[str]) -> int:
    from medmnist_lit.training.fit import log_stage_result

    cli = _training(command, args)
    ckpt = cli.config.get("ckpt_path")
    if not ckpt:
        raise UsageError(f"{command} needs --ckpt_path (a checkpoint written by fit)")
    run = cli.trainer.validate if command == "validate" else cli.trainer.test
    results = run(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt, verbose=False)
    log_stage_result(command, results[0], cli.trainer)
    _log_run_dir(cli.trainer)
    return 0


def _log_run_dir(trainer: Any) -> None:
    # evaluation commands log into the checkpoint's run directory (or where the user's logger says)
    if trainer.logger is not None and trainer.log_dir:
        log.info("logged to: %s", trainer.log_dir)


def predict_command(args: Sequence[str]) -> int:
    """``medmnist-lit predict``: class probabilities of a checkpoint for the test split, as CSV."""
    from medmnist_lit.training.predict import predict_to_csv

    cli = _training("predict", args)
    ckpt = cli.config.get("ckpt_path")
    if not ckpt:
        raise UsageError("predict needs --ckpt_path (a checkpoint written by fit)")
    options = cli.config.predict
    path = predict_to_csv(cli.trainer, cli.model, cli.datamodule, ckpt, options.output, options.source)
    log.info("predictions: %s", path)
    _log_run_dir(cli.trainer)
    return 0


def lr_find_command(args: Sequence[str]) -> int:
    """``medmnist-lit lr-find``: Lightning's learning-rate range test."""
    from medmnist_lit.lightning_cli import LRFindOptions
    from medmnist_lit.training.lr_find import find_lr

    cli = _training("lr-find", args)
    find_lr(cli.trainer, cli.model, cli.datamodule, LRFindOptions(**cli.config.lr_find.as_dict()))
    return 0


def batch_command(args: Sequence[str]) -> int:
    """``medmnist-lit batch``: every variant × seed of an experiment spec, resumable."""
    from medmnist_lit.batch.runner import batch_command as run

    return run(args)


def report_command(args: Sequence[str]) -> int:
    """``medmnist-lit report``: a batch's tables and figures, rebuilt from disk."""
    from medmnist_lit.batch.report import report_command as run

    return run(args)


# ---------------------------------------------------------------------------------------------- data
def _data_parser(prog: str, description: str) -> Any:
    from jsonargparse import ActionConfigFile, ArgumentParser

    # errors raise (one line with a suggestion, see _parse); --trainer.max_epoch style prefixes are typos
    parser = ArgumentParser(
        prog=f"medmnist-lit {prog}", description=description, exit_on_error=False, allow_abbrev=False
    )
    parser.add_argument("-c", "--config", action=ActionConfigFile, help="YAML file with a data: section.")
    return parser


def _parse(parser: Any, args: Sequence[str]) -> Any:
    """``parser.parse_args``; a bad argument is one line (a misspelled option gets a "did you mean")."""
    import argparse

    from medmnist_lit.utils.options import OptionError, explain_parse_error

    try:
        return parser.parse_args(list(args))
    except argparse.ArgumentError as err:
        raise OptionError(explain_parse_error(parser, str(err), args)) from None


def prepare_command(args: Sequence[str]) -> int:
    """``medmnist-lit prepare``: decode a source into the cache and print the count per class."""
    from medmnist_lit.data.cache import load_dataset, prepare

    parser = _data_parser("prepare", "Decode a source once into the cache; later runs memory-map it.")
    parser.add_function_arguments(load_dataset, "data", skip={"workers"})
    parser.add_argument("--workers", type=int | None, default=None, help="Decoding processes (default: all cores).")
    config = _parse(parser, args)
    _setup_plain_logging()
    options = config.data.as_dict()
    options.pop("__path__", None)  # where `--data FILE.yaml` came from: not an option
    result = prepare(**options, workers=config.workers)
    print(result)
    return 0


def audit_command(args: Sequence[str]) -> int:
    """``medmnist-lit audit``: exact and near duplicates within a source and across its split."""
    from medmnist_lit.data.datamodule import MedMNISTDataModule
    from medmnist_lit.splits.audit import audit, format_audit
    from medmnist_lit.utils.files import check_writable, write_json

    parser = _data_parser("audit", "Leakage audit: duplicates within the data and across train/val/test.")
    parser.add_class_arguments(MedMNISTDataModule, "data")
    parser.add_argument("--output", type=str | None, default=None, help="Also write the report as JSON here.")
    parser.add_argument(
        "--figure", type=str | None, default=None, help="Also draw example leaked pairs side by side into this PNG."
    )
    config = _parse(parser, args)
    for option in ("output", "figure"):
        if config[option]:
            check_writable(config[option], f"--{option}")  # before the audit, not after it
    _setup_plain_logging()
    options = config.data.as_dict()
    options.pop("__path__", None)  # where `--data FILE.yaml` came from: not an option
    datamodule = MedMNISTDataModule(**options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the formatted report carries the warning
        report = audit(datamodule.dataset, datamodule.split)
    print(format_audit(report))
    if config.output:
        write_json(config.output, report)
        print(f"report: {config.output}")
    if config.figure:
        from medmnist_lit.splits.audit_figure import save_leak_pairs

        if save_leak_pairs(config.figure, datamodule.dataset, report):
            print(f"figure: {config.figure}")
        else:
            print(f"figure: none (no duplicate pairs across the split to show; {config.figure} not written)")
    return 0


def download_command(args: Sequence[str]) -> int:
    """``medmnist-lit download``: fetch Medical MNIST and print where it is."""
    from medmnist_lit.data.download import DEFAULT_URL, download

    parser = _data_parser("download", "Fetch Medical MNIST (58,954 64×64 JPEGs in 6 class folders).")
    parser.add_argument("--root", default="data", help="Folder that will hold medical_mnist/.")
    parser.add_argument("--url", default=DEFAULT_URL, help="Archive URL (a zip whose resized/ holds the classes).")
    parser.add_argument("--force", type=bool, default=False, help="Download again even if complete.")
    config = _parse(parser, args)
    _setup_plain_logging()
    path = download(config.root, config.url, force=config.force)
    print(f"Medical MNIST is in {path}")
    print(f"train on it with: medmnist-lit fit --config experiments/seed_logistic.yaml --data.source {path}")
    return 0


def _setup_plain_logging() -> None:
    from medmnist_lit.utils.console import setup_console

    setup_console(target="stderr")  # stdout is for the command's result


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "fit": fit_command,
    "validate": lambda args: _evaluate_command("validate", args),
    "test": lambda args: _evaluate_command("test", args),
    "predict": predict_command,
    "cv": cv_command,
    "lr-find": lr_find_command,
    "batch": batch_command,
    "report": report_command,
    "prepare": prepare_command,
    "download": download_command,
    "audit": audit_command,
}


#: What an interrupted command left behind, for its one-line Ctrl-C message.
INTERRUPTED = {
    "prepare": "nothing was cached",
    "download": "nothing was downloaded",
    "batch": "finished runs are recorded; run the same command again to resume",
}


def one_line(err: BaseException) -> str:
    """The error's message on one line (multi-line library messages are joined)."""
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    return text or type(err).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``medmnist-lit``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    run = COMMANDS.get(command)
    if run is None:
        print(f"medmnist-lit: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    try:
        from medmnist_lit.utils.config_files import check_config_args

        check_config_args(rest)  # before the parsers, whose messages name neither the file nor the line
        # not before output meant to be read whole: help, a printed config, a batch's dry-run plan
        if command in HEAVY and not any(a.startswith(("-h", "--help", "--print_config", "--dry-run")) for a in rest):
            from medmnist_lit.utils.console import setup_console

            setup_console()  # importing torch and Lightning takes seconds: say so first
            log.info("medmnist-lit %s: starting (loading PyTorch and Lightning)...", command)
        return run(rest)
    except KeyboardInterrupt:
        if os.environ.get("MEDMNIST_LIT_DEBUG"):
            raise
        print(
            f"medmnist-lit {command}: interrupted; {INTERRUPTED.get(command, 'finished results are kept')}",
            file=sys.stderr,
        )
        return 130
    except (UsageError, ValueError, OSError) as err:
        if os.environ.get("MEDMNIST_LIT_DEBUG"):
            raise
        from medmnist_lit.utils.options import OptionError

        # how the command was called is the whole story of a usage error; a traceback would not help
        debug = "" if isinstance(err, (UsageError, OptionError)) else " (MEDMNIST_LIT_DEBUG=1 shows the traceback)"
        print(f"medmnist-lit {command}: error: {one_line(err)}{debug}", file=sys.stderr)
        return 2


def entry_point() -> None:
    """Console-script entry point."""
    sys.exit(main())
