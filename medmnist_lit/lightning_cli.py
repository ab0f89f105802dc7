"""LightningCLI parsers of the training commands (``fit``, ``validate``, ``test``, ``predict``, ``lr-find``, ``cv``).

Each command is one LightningCLI in ``run=False`` mode: the same ``--config``, dotted overrides,
``--print_config``, ``class_path``/``init_args`` and ``--seed_everything`` as any LightningCLI, with
``--optimizer``/``--lr_scheduler`` groups passed to the model as plain configs (so they are saved in the
checkpoint's hyperparameters and shown in TensorBoard's HParams tab).
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from jsonargparse import Namespace
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ProgressBar as LightningProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, LRSchedulerTypeTuple, SaveConfigCallback
from torch.optim import Optimizer

from medmnist_lit.callbacks import ProgressBar
from medmnist_lit.data.datamodule import MedMNISTDataModule
from medmnist_lit.model.classifier import DEFAULT_OPTIMIZER, Classifier
from medmnist_lit.training.fit import default_callbacks
from medmnist_lit.utils.checkpoints import load_checkpoint, secure_trainer
from medmnist_lit.utils.options import OptionError, explain_parse_error

log = logging.getLogger("medmnist_lit")

#: Commands that evaluate a checkpoint: they log into its run directory, never into a new one.
EVALUATION = ("validate", "test", "predict")
#: Strategies that launch their processes from inside ``Trainer.fit`` (spawn, fork): refused by fit and cv.
IN_CHILD_STRATEGIES = ("ddp_spawn", "ddp_fork", "ddp_notebook")

#: Trainer defaults of every training command (all overridable with ``--trainer.*``).
TRAINER_DEFAULTS: dict[str, Any] = {
    "max_epochs": 10,
    "enable_model_summary": False,
    "log_every_n_steps": 1,
    "logger": {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": "lightning_logs", "name": "medmnist", "default_hp_metric": False},
    },
}


def _as_dict(value: Namespace | None) -> dict[str, Any] | None:
    return None if value is None else value.as_dict()


@dataclass
class LRFindOptions:
    """Options of Lightning's learning-rate range test (``Tuner.lr_find``).

    Attributes:
        min_lr: Smallest learning rate tried.
        max_lr: Largest learning rate tried.
        num_training: Number of optimizer steps (one learning rate each).
        mode: ``exponential`` or ``linear`` increase.
        early_stop_threshold: Stop when the loss exceeds this multiple of the best loss (null: never).
    """

    min_lr: float = 1e-6
    max_lr: float = 1.0
    num_training: int = 100
    mode: Literal["exponential", "linear"] = "exponential"
    early_stop_threshold: float | None = 4.0


@dataclass
class PredictOptions:
    """What to predict and where predictions go.

    Attributes:
        source: Images to predict: a plain folder of image files, a class-folder tree, a ``.zip`` or a ``.npz``
            (default: the test split of the data the model was trained on).
        output: CSV with one row per image (id, label if known, predicted class, probability per class); default
            ``predictions.csv`` in the run directory.
    """

    source: str | None = None
    output: str | None = None


class TrainingCLI(LightningCLI):
    """LightningCLI for one training command; ``extra`` adds the command's own option group.

    Args:
        command: Name of the command (shown in ``--help``).
        args: Command-line arguments (after the command name), or a config dict.
        extra: ``{group: dataclass}`` of command-specific options, e.g. ``{"cv": CVOptions}``.
        ckpt_path: Add ``--ckpt_path``: for ``fit`` a checkpoint to resume from; for the other commands the
            checkpoint whose hyperparameters (loaded weights-only) and weights are evaluated.
        description: Help text of the command.
        parse_only: Only parse and validate; build no model, data or trainer.

    Raises:
        OptionError: A bad argument, in one line; an unknown or misspelled option is named with the closest known
            one. The full usage is printed only by ``--help``.
    """

    def __init__(
        self,
        command: str,
        args: list[str] | dict[str, Any] | None,
        extra: dict[str, type] | None = None,
        ckpt_path: bool = False,
        description: str | None = None,
        parse_only: bool = False,
    ) -> None:
        self.command = command
        self.extra = dict(extra or {})
        self.ckpt_path = ckpt_path
        self.parse_only = parse_only
        super().__init__(
            Classifier,
            MedMNISTDataModule,
            args=args,
            run=False,
            auto_configure_optimizers=False,
            trainer_defaults=TRAINER_DEFAULTS,
            seed_everything_default=0,
            # evaluating a checkpoint writes no run directory, so no config.yaml either
            save_config_callback=SaveConfigCallback if command in ("fit", "lr-find", "cv") else None,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={
                "prog": f"medmnist-lit {command}",
                "description": description,
                # the usage argparse writes lists all 100+ options: 70 lines before the first word of help
                "usage": f"medmnist-lit {command} [-h] [-c CONFIG] [--print_config] [--GROUP.OPTION VALUE ...]",
                "exit_on_error": False,  # a typo gets one line with a suggestion, not the usage (parse_arguments)
                "allow_abbrev": False,  # --trainer.max_epoch is a typo, not silently --trainer.max_epochs
            },
        )

    def instantiate_classes(self) -> None:
        """Build model, data and trainer (nothing in ``parse_only`` mode).

        With a checkpoint to evaluate, the DataModule starts from the checkpoint's data record: the classes and the
        image shape linked to the model come from it, so ``predict --predict.source`` needs no training data.
        """
        from medmnist_lit.data.provenance import restoring

        if not self.parse_only:
            with restoring(getattr(self, "_data_record", None)):
                super().instantiate_classes()

    def add_core_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Model, data, optimizer, scheduler and the command's own options first, then the Trainer's 100+.

        ``--help`` lists groups in the order they are added; LightningCLI adds the Trainer first.
        """
        parser.add_lightning_class_args(self._model_class, "model", subclass_mode=self.subclass_mode_model)
        parser.add_lightning_class_args(self._datamodule_class, "data", subclass_mode=self.subclass_mode_data)
        self._add_project_groups(parser)
        parser.add_lightning_class_args(self.trainer_class, "trainer")
        parser.set_defaults({f"trainer.{k}": v for k, v in self.trainer_defaults.items() if k != "callbacks"})

    def _add_project_groups(self, parser: LightningArgumentParser) -> None:
        parser.add_subclass_arguments(
            (Optimizer,), "optimizer", instantiate=False, fail_untyped=False, skip={"params"}, required=False
        )
        parser.add_subclass_arguments(
            LRSchedulerTypeTuple,
            "lr_scheduler",
            instantiate=False,
            fail_untyped=False,
            skip={"optimizer"},
            required=False,
        )
        parser.set_defaults({"optimizer": DEFAULT_OPTIMIZER})
        for group, options in self.extra.items():
            parser.add_class_arguments(options, group)
        if self.ckpt_path:
            parser.add_argument(
                "--ckpt_path",
                type=str | None,
                default=None,
                help="Checkpoint to resume from (fit) or to evaluate (validate, test, predict).",
            )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Links: the optimizer and scheduler groups and the data's shape and classes go to the model."""
        parser.link_arguments("optimizer", "model.optimizer", compute_fn=_as_dict)
        parser.link_arguments("lr_scheduler", "model.lr_scheduler", compute_fn=_as_dict)
        for key in ("num_classes", "input_shape", "class_names"):
            parser.link_arguments(f"data.{key}", f"model.{key}", apply_on="instantiate")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse ``args``; with ``--ckpt_path`` the checkpoint's model and data settings are the defaults.

        So ``medmnist-lit test --ckpt_path X`` rebuilds the model and the same data and split it was trained on,
        while any ``--model.*``/``--data.*`` given on the command line or in a config file still wins. The path is
        taken from the parsed config (command line, config files, the last of repeated flags) and the checkpoint
        is read by :func:`~medmnist_lit.utils.checkpoints.load_checkpoint` (weights-only: no pickled code runs).
        """
        given = [] if isinstance(args, (dict, Namespace)) else list(args or [])
        try:
            if isinstance(args, (dict, Namespace)):
                self.config = parser.parse_object(args)
                return
            base = self._checkpoint_defaults(parser, given)
            self.config = parser.parse_args(given, namespace=base) if base is not None else parser.parse_args(given)
        except argparse.ArgumentError as err:
            raise OptionError(explain_parse_error(parser, str(err), given, f"medmnist-lit {self.command}")) from None

    def _checkpoint_defaults(self, parser: LightningArgumentParser, args: list[str]) -> Namespace | None:
        if self.command == "fit" or not self.ckpt_path:
            return None
        # a first parse finds the path wherever it was given; --print_config waits for the second one
        path = parser.parse_args([a for a in args if not a.startswith("--print_config")]).get("ckpt_path")
        if not path:
            return None
        checkpoint = load_checkpoint(path)
        # linked keys come from the data and the optimizer groups; "_..." keys are LightningCLI bookkeeping
        linked = {"num_classes", "input_shape", "class_names", "optimizer", "lr_scheduler"}
        model = {k: v for k, v in checkpoint.get("hyper_parameters", {}).items() if k not in linked and k[0] != "_"}
        data = {k: v for k, v in checkpoint.get("datamodule_hyper_parameters", {}).items() if k[0] != "_"}
        # the data record (classes, shape, pixel statistics, source and split identity) for instantiate_classes;
        # absent from checkpoints of older versions, which then need their data as before
        self._data_record = checkpoint.get(MedMNISTDataModule.__qualname__) or None
        return parser.parse_object({"model": model, "data": data})

    def before_instantiate_classes(self) -> None:
        """Say which data is loading; choose where the default logger writes.

        ``--trainer.default_root_dir`` is honoured: the default TensorBoard logger writes under it, as Lightning's
        would. Evaluation commands log into the checkpoint's run directory (:meth:`_evaluation_logger`). A logger
        configured by the user keeps its own ``save_dir`` (Lightning's rule as well).
        """
        strategy = self.config.get("trainer.strategy")
        if self.command in ("fit", "cv") and isinstance(strategy, str) and strategy.startswith(IN_CHILD_STRATEGIES):
            # the launcher trains copies of the model in new processes and hands back only the weights: the run's
            # history, checkpoint paths and scores stay there (Lightning's "ddp" re-runs the whole command instead)
            raise OptionError(
                f"trainer.strategy {strategy} trains in child processes whose results {self.command} cannot "
                "collect; use --trainer.strategy ddp (one process per device, each running the command)"
            )
        source = self.config.get("data.source")
        if self.command == "predict" and self.config.get("predict.source"):
            # the checkpoint holds what predicting needs: the training data is not read
            log.info("data: %s (the images to predict)", self.config.get("predict.source"))
        elif source and not self.parse_only:  # (without a source, the data module names the demo it loads)
            # loading, or a first decode of a big source, takes seconds: say what is happening before it starts
            log.info("data: %s (loading; a first use decodes it into the cache)", source)
        if self.command in EVALUATION and self._evaluation_logger():
            return
        trainer = self.config.get("trainer") or Namespace()
        root, logger = trainer.get("default_root_dir"), trainer.get("logger")
        default = TRAINER_DEFAULTS["logger"]
        if (
            root
            and isinstance(logger, Namespace)
            and logger.get("class_path") == default["class_path"]
            and logger.get("init_args.save_dir") == default["init_args"]["save_dir"]
        ):
            logger["init_args.save_dir"] = os.fspath(root)

    def _evaluation_logger(self) -> bool:
        """Unless the user configured a logger, log into the run directory of ``--ckpt_path``; True if it did.

        The run directory is the parent of the ``checkpoints/`` folder holding the checkpoint (else the checkpoint's
        folder), so test and validation metrics land next to the run's own events and TensorBoard shows them on its
        charts; ``predictions.csv`` defaults there too. A checkpoint at a URL has no run directory: nothing is logged.
        """
        ckpt = self.config.get("ckpt_path")
        if not ckpt or self.config.get("trainer.logger") != self.parser.get_defaults().get("trainer.logger"):
            return False
        if str(ckpt).startswith(("http://", "https://")):
            self.config["trainer.logger"] = False
            where = ""
            if self.command == "predict" and not self.config.get("predict.output"):
                where = f"; predictions go to {Path.cwd() / 'predictions.csv'} (--predict.output to choose)"
            log.info("logs: none (the checkpoint is a URL, so it has no run directory)%s", where)
            return True
        run = checkpoint_run_dir(ckpt)
        init_args = {"save_dir": os.fspath(run.parent), "name": "", "version": run.name, "default_hp_metric": False}
        self.config["trainer.logger"] = Namespace(
            class_path=TRAINER_DEFAULTS["logger"]["class_path"], init_args=Namespace(**init_args)
        )
        return True

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The configured trainer plus fresh default callbacks (checkpointing, LR monitor, epoch lines).

        Our progress bar is left out when ``--trainer.enable_progress_bar false`` or when the user configured a
        progress bar callback of their own (Lightning allows one).
        """
        configured = self._get(self.config_init, "trainer", default={}).get("callbacks") or []
        progress = self._get(self.config_init, "trainer", default={}).get("enable_progress_bar") is not False
        progress = progress and not any(isinstance(c, LightningProgressBar) for c in configured)
        if self.command in ("fit", "lr-find", "cv"):
            callbacks = [*default_callbacks(progress_bar=progress), *configured]
        else:  # evaluating a checkpoint: nothing to save, nothing to schedule
            callbacks = [*([ProgressBar()] if progress else []), *configured]
        return secure_trainer(super().instantiate_trainer(callbacks=callbacks, **kwargs))


def checkpoint_run_dir(ckpt_path: str | os.PathLike[str]) -> Path:
    """The run directory of a checkpoint: the parent of its ``checkpoints/`` folder, else the folder holding it."""
    text = os.fspath(ckpt_path)
    if text.startswith("file://"):
        from urllib.parse import unquote, urlparse

        text = unquote(urlparse(text).path)
    folder = Path(text).expanduser().parent
    return folder.parent if folder.name == "checkpoints" else folder


def build_cli(command: str, args: list[str] | dict[str, Any], *, parse_only: bool = False) -> TrainingCLI:
    """The parsed and instantiated CLI of a training command (``fit``, ``cv``, ``test``, ...).

    With ``parse_only`` nothing is built and a bad config raises ``ValueError`` naming the key; the returned CLI's
    ``parser.parse_object(config)`` validates further configs of the same command cheaply.
    """
    from medmnist_lit.cv.runner import CVOptions
    from medmnist_lit.utils.console import setup_console

    setup_console()
    options: dict[str, dict[str, Any]] = {
        "fit": {"ckpt_path": True, "description": "Train, then test the best checkpoint on the test split."},
        "validate": {"ckpt_path": True, "description": "Score a checkpoint on the validation fold."},
        "test": {"ckpt_path": True, "description": "Score a checkpoint on the test split."},
        "predict": {
            "ckpt_path": True,
            "extra": {"predict": PredictOptions},
            "description": "Write a checkpoint's class probabilities for the test split.",
        },
        "lr-find": {"extra": {"lr_find": LRFindOptions}, "description": "Lightning's learning-rate range test."},
        "cv": {"extra": {"cv": CVOptions}, "description": "Cross-validation and leave-one-out."},
    }
    if command not in options:
        raise ValueError(f"unknown training command {command!r}; choose one of {sorted(options)}")
    if not parse_only:
        return TrainingCLI(command, args, **options[command])
    import argparse

    try:
        return TrainingCLI(command, args, parse_only=True, **options[command])
    except argparse.ArgumentError as err:
        raise ValueError(str(err)) from None


def run_fit(args: list[str] | dict[str, Any]) -> Any:
    """``medmnist-lit fit`` as a function: returns the :class:`~medmnist_lit.training.fit.RunResult`."""
    from medmnist_lit.training.fit import fit_and_test

    cli = build_cli("fit", args)
    return fit_and_test(cli.trainer, cli.model, cli.datamodule, ckpt_path=cli.config.get("ckpt_path"))


def run_cv(args: list[str] | dict[str, Any]) -> Any:
    """``medmnist-lit cv`` as a function: returns the :class:`~medmnist_lit.cv.runner.CVResult`."""
    from medmnist_lit.cv.runner import CVOptions, run_cv_cli

    cli = build_cli("cv", args)
    return run_cv_cli(cli, CVOptions(**cli.config.cv.as_dict()))


def resolve_config(command: str, args: list[str]) -> dict[str, Any]:
    """A command line parsed as the command's LightningCLI parses it, as the plain config a run job carries.

    ``--help`` and ``--print_config`` behave as on any LightningCLI (they print and exit); a bad argument raises
    :class:`~medmnist_lit.utils.options.OptionError` (one line). Config files are read and merged, so the result is
    self-contained.
    """
    import warnings

    import yaml

    from medmnist_lit.cv.runner import CVOptions
    from medmnist_lit.utils.console import setup_console

    setup_console()  # again: importing Lightning reset its loggers' levels ("Seed set to 0")
    extra = {"cv": {"extra": {"cv": CVOptions}}, "fit": {"ckpt_path": True}}
    if command not in extra:
        raise ValueError(f"only fit and cv run as jobs, not {command!r}")
    cli = TrainingCLI(command, list(args), parse_only=True, **extra[command])  # type: ignore[arg-type]
    with warnings.catch_warnings():  # tuples (Adam's betas) dump as lists, which the parser takes back as they are
        warnings.filterwarnings("ignore", message=".*does not round-trip")
        config = yaml.safe_load(cli.parser.dump(cli.config, skip_none=False, skip_link_targets=True))
    config.pop("config", None)  # the config files themselves: their contents are in the rest
    return config
