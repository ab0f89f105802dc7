"""Fold-parallel cross-validation: the heads of many folds trained together in one pass over the data.

Cross-validation folds train on one shared stream of development-set batches, each fold with its own validation
samples masked out (:meth:`~medmnist_lit.data.datamodule.MedMNISTDataModule.stream_loader`). So the folds can share
each batch: their heads are stacked (:class:`StackedHead`), one matrix product computes every head's logits
(the batch is read once), each head's loss is averaged over its own kept samples only, and one optimizer steps
all stacked parameters. For element-wise optimizers (SGD with momentum, Nesterov or weight decay, Adagrad, Adam,
AdamW, RMSprop) and schedules that do not watch a metric, every head then follows exactly the path it would
follow alone from the same initial weights and batch order; floating-point sums are ordered differently, so
results agree to within float tolerance rather than bit for bit. Dropout masks come from one random stream, so
with dropout the folds are equivalent in distribution, not sample by sample.

What needs one model at a time falls back to sequential folds: batch norm (statistics over masked batches),
ReduceLROnPlateau and early stopping (they react to each fold's own metric), class weights that differ per fold
(``class_weights="balanced"``), and several devices.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor, nn
from torch.optim.lr_scheduler import ReduceLROnPlateau

from medmnist_lit.callbacks import ProgressBar
from medmnist_lit.cv.folds import FoldOutcome, fresh_model, init_hparams
from medmnist_lit.data.loaders import Block, gather
from medmnist_lit.model.classifier import Classifier, backward_and_step, lean_steps_possible
from medmnist_lit.model.heads import MLP, LogisticRegression
from medmnist_lit.model.metrics import EpochMetrics
from medmnist_lit.training.fit import log_hparams, score
from medmnist_lit.utils.checkpoints import secure_trainer
from medmnist_lit.utils.files import atomic_path, write_json

log = logging.getLogger("medmnist_lit")

#: Share of free memory the stacked heads of one pass may use.
MEMORY_SHARE = 0.4


def unsupported_reason(model: Classifier, callbacks: Sequence[Any], trainer_kwargs: dict[str, Any]) -> str | None:
    """Why these folds cannot train in parallel, or ``None`` when they can."""
    head = model.head
    if not isinstance(head, (LogisticRegression, MLP)):
        return f"the head {type(head).__name__} is not a logistic or MLP head"
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in head.modules()):
        return "batch norm computes statistics over each fold's own batch"
    if model.class_weights == "balanced":
        return "balanced class weights differ per fold"
    scheduler = (model.lr_scheduler_config or {}).get("class_path", "")
    if scheduler.rsplit(".", 1)[-1] == "ReduceLROnPlateau":
        return "ReduceLROnPlateau reacts to each fold's own validation loss"
    for callback in callbacks:
        if isinstance(callback, EarlyStopping):
            return "early stopping reacts to each fold's own validation loss"
        factory = getattr(callback, "factory", None)
        if factory is not None and getattr(factory, "func", factory) is ReduceLROnPlateau:
            return "ReduceLROnPlateau reacts to each fold's own validation loss"
    devices = trainer_kwargs.get("devices", "auto")
    if trainer_kwargs.get("num_nodes", 1) != 1 or (isinstance(devices, int) and devices > 1):
        return "several devices train data-parallel, one model at a time"
    return None


def head_bytes(model: Classifier, batch_size: int) -> int:
    """Rough memory of one head in a pass: weights, gradients, optimizer state, best copy, activations."""
    params = sum(p.numel() for p in model.head.parameters())
    widths = sum(m.out_features for m in model.head.modules() if isinstance(m, nn.Linear))
    return 4 * (6 * params + 4 * batch_size * widths)


def folds_per_pass(model: Classifier, batch_size: int, n_folds: int, device: torch.device) -> int:
    """How many folds fit in one pass within :data:`MEMORY_SHARE` of the free memory of ``device``."""
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            free = 4 << 30
    return max(1, min(n_folds, int(MEMORY_SHARE * free) // head_bytes(model, batch_size)))


class StackedHead(nn.Module):
    """``K`` heads of identical architecture as stacked parameters; one forward gives all ``K`` heads' logits.

    The first layer of heads that share an input is one matrix product with the ``K`` weight matrices side by
    side; later layers (and per-fold inputs) use batched matrix products.

    Args:
        heads: Logistic-regression or MLP heads (without batch norm), all of the same architecture.
    """

    def __init__(self, heads: Sequence[nn.Module]) -> None:
        super().__init__()
        layers = [[m for m in head.modules() if isinstance(m, nn.Linear)] for head in heads]
        self.names = [name for name, m in heads[0].named_modules() if isinstance(m, nn.Linear)]
        self.weights = nn.ParameterList(
            [nn.Parameter(torch.stack([h[i].weight.detach() for h in layers]).clone()) for i in range(len(self.names))]
        )
        self.biases = nn.ParameterList(
            [nn.Parameter(torch.stack([h[i].bias.detach() for h in layers]).clone()) for i in range(len(self.names))]
        )
        template = heads[0]
        self.activation = next(
            (
                m
                for m in template.modules()
                if not isinstance(m, (nn.Linear, nn.Dropout, nn.Sequential, type(template)))
            ),
            nn.Identity(),
        )
        self.dropout = next((m for m in template.modules() if isinstance(m, nn.Dropout)), nn.Identity())

    @property
    def num_heads(self) -> int:
        """Number of stacked heads."""
        return len(self.weights[0])

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``K×B×classes`` of images ``B×C×H×W`` (shared) or ``K×B×C×H×W`` (one input per head)."""
        k = self.num_heads
        shared = x.dim() == 4
        h = x.flatten(1) if shared else x.flatten(2)
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            if shared and i == 0:
                out = weight.shape[1]
                h = (h @ weight.reshape(k * out, -1).T).view(len(h), k, out).transpose(0, 1) + bias[:, None]
            else:
                h = torch.baddbmm(bias[:, None], h, weight.transpose(1, 2))
            if i + 1 < len(self.weights):
                h = self.dropout(self.activation(h))
        return h

    def forward_head(self, index: int, x: Tensor) -> Tensor:
        """Logits ``B×classes`` of head ``index`` alone (validation, where each sample has one owning fold)."""
        h = x.flatten(1)
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = nn.functional.linear(h, weight[index], bias[index])
            if i + 1 < len(self.weights):
                h = self.dropout(self.activation(h))
        return h

    def head_state(self, index: int, weights: Sequence[Tensor], biases: Sequence[Tensor]) -> dict[str, Tensor]:
        """State dict of head ``index`` (keys of the original head) from stacked ``weights`` and ``biases``."""
        state = {}
        for name, w, b in zip(self.names, weights, biases, strict=True):
            state[f"{name}.weight"] = w[index].detach().clone()
            state[f"{name}.bias"] = b[index].detach().clone()
        return state


class FoldParallelClassifier(L.LightningModule):
    """Trains the heads of several folds at once on the cross-validation stream (manual optimisation).

    After each training epoch it scores every head on its own validation samples, keeps each head's best weights
    (lowest validation loss, first on ties, as ModelCheckpoint does) and records per-fold histories.

    Args:
        template: The configured classifier (loss, optimizer and schedule settings).
        heads: The folds' freshly initialised heads, in the order of ``folds``.
        datamodule: The cross-validation data module (its split gives each fold's samples).
        folds: Fold indices of the heads.
    """

    def __init__(self, template: Classifier, heads: Sequence[nn.Module], datamodule: Any, folds: Sequence[int]) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.template = [template]  # lists keep them out of this module's parameters and hparams
        self.data = [datamodule]
        self.folds = list(folds)
        self.stacked = StackedHead(heads)
        self.history: dict[str, list[Tensor]] = {}
        self.best_loss = torch.full((len(self.folds),), math.inf)
        self.best_epoch = torch.full((len(self.folds),), -1, dtype=torch.long)
        self.best_weights: list[Tensor] = []
        self.best_biases: list[Tensor] = []
        self._lean = False

    def train_dataloader(self) -> Any:
        """The shared development-set stream with every fold's validation samples masked out."""
        return self.data[0].stream_loader(self.folds, device=self.device, masked=True)

    def on_fit_start(self) -> None:
        """Place validation masks and best-weight copies on the training device."""
        datamodule, device = self.data[0], self.device
        split = datamodule.split
        self.images, self.labels = datamodule.tensors(device)
        self.val_index = [torch.as_tensor(split.val[f].copy()).to(device) for f in self.folds]
        self.fold_transforms = [datamodule.fold_transform(f).to(device) for f in self.folds]
        self.best_weights = [w.detach().clone() for w in self.stacked.weights]
        self.best_biases = [b.detach().clone() for b in self.stacked.biases]
        self._sums = torch.zeros(3, len(self.folds), device=device)

    def on_train_start(self) -> None:
        """Decide once whether optimizer steps can take the lean path."""
        self._lean = lean_steps_possible(self.trainer, self)

    def _losses(self, logits: Tensor, y: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
        """Per-fold mean loss over kept samples (as each fold computes it alone), and the kept counts."""
        model = self.template[0]
        k, b, c = logits.shape
        ce = nn.functional.cross_entropy(
            logits.reshape(k * b, c),
            y.repeat(k),
            weight=model.class_weight,
            label_smoothing=model.label_smoothing,
            reduction="none",
        ).view(k, b)
        kept = keep.sum(1)
        # cross_entropy's mean divides the (class-weighted) sum by the sum of the targets' class weights
        norm = kept if model.class_weight is None else (keep * model.class_weight[y]).sum(1)
        return (ce * keep).sum(1) / norm.clamp_min(1e-12), kept

    def training_step(self, batch: Block, batch_idx: int) -> Tensor:
        """One optimizer step of all heads per mini-batch of the block."""
        optimizer = self.optimizers()
        assert not isinstance(optimizer, list)
        total = torch.zeros((), device=self.device)
        for x, y, keep in batch:
            logits = self.stacked(x)
            per_fold, kept = self._losses(logits, y, keep)
            total = per_fold.sum()  # heads are independent: each head's gradient of the sum is its own gradient
            optimizer.zero_grad(set_to_none=True)
            backward_and_step(self, optimizer, total, self._lean)
            self._step_schedulers("step")
            with torch.no_grad():
                correct = ((logits.argmax(-1) == y) & keep).sum(1)
                self._sums += torch.stack([per_fold.detach() * kept, correct, kept])
        return total.detach()

    def on_train_epoch_start(self) -> None:
        """Reset the epoch's running sums."""
        self._sums.zero_()

    @torch.inference_mode()
    def _validate(self) -> tuple[Tensor, Tensor]:
        """Per-fold validation loss and accuracy of the current weights (each head on its own samples only)."""
        sums = torch.zeros(3, len(self.folds), device=self.device)
        was_training = self.training
        self.eval()
        for row, index in enumerate(self.val_index):
            for part in index.split(self.data[0].eval_batch_size):
                logits = self.stacked.forward_head(row, self.fold_transforms[row](gather(self.images, part)))[None]
                y, keep = self.labels[part], torch.ones(1, len(part), dtype=torch.bool, device=self.device)
                per_fold, kept = self._losses(logits, y, keep)
                correct = (logits[0].argmax(-1) == y).sum()
                sums[:, row] += torch.stack([per_fold[0] * kept[0], correct, kept[0]])
        self.train(was_training)
        sums = sums.cpu()
        return sums[0] / sums[2].clamp_min(1), sums[1] / sums[2].clamp_min(1)

    def on_train_epoch_end(self) -> None:
        """Record the epoch, keep each head's best weights, step per-epoch schedules."""
        sums = self._sums.cpu()
        val_loss, val_acc = self._validate()
        epoch = {
            "train/loss": sums[0] / sums[2].clamp_min(1),
            "train/acc": sums[1] / sums[2].clamp_min(1),
            "val/loss": val_loss,
            "val/acc": val_acc,
        }
        for key, value in epoch.items():
            self.history.setdefault(key, []).append(value)
        better = val_loss < self.best_loss
        self.best_loss = torch.where(better, val_loss, self.best_loss)
        self.best_epoch[better] = self.current_epoch
        index = better.nonzero().flatten().to(self.device)
        current = [*self.stacked.weights, *self.stacked.biases]
        for best, now in zip([*self.best_weights, *self.best_biases], current, strict=True):
            best[index] = now.detach()[index]
        self._step_schedulers("epoch")

    def configure_optimizers(self) -> Any:
        """The template's optimizer and schedule, on the stacked parameters."""
        return self.template[0].build_optimization(self.parameters())

    def _step_schedulers(self, interval: str) -> None:
        for config in self.trainer.lr_scheduler_configs:
            if config.interval == interval:
                config.scheduler.step()  # type: ignore[call-arg]  # ReduceLROnPlateau never runs in parallel

    def fold_history(self, index: int) -> dict[str, list[float]]:
        """Per-epoch metrics of head ``index``."""
        return {key: [float(v[index]) for v in values] for key, values in self.history.items()}

    def best_head_state(self, index: int) -> dict[str, Tensor]:
        """Best weights of head ``index`` as a state dict of the original head."""
        return self.stacked.head_state(index, self.best_weights, self.best_biases)


def _save_checkpoint(model: Classifier, path: Path, epoch: int, global_step: int) -> None:
    """A Lightning-format checkpoint (loadable with ``Classifier.load_from_checkpoint``), written atomically."""
    checkpoint = {
        "epoch": epoch,
        "global_step": global_step,
        "pytorch-lightning_version": L.__version__,
        "state_dict": model.state_dict(),
        "hyper_parameters": init_hparams(model),
    }
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


def _finish_fold(
    run: FoldParallelClassifier,
    row: int,
    scorer: Classifier,
    datamodule: Any,
    run_dir: Path,
    seconds: float,
    checkpoint: str,
    metrics_state: Any,
) -> FoldOutcome:
    """Write one fold's directory as a sequential fold would: events, checkpoints, metrics.json."""
    fold = run.folds[row]
    datamodule.fold = fold
    directory = run_dir / f"fold_{fold}"
    history = run.fold_history(row)
    epochs = len(history.get("train/loss", []))
    best_epoch = int(run.best_epoch[row]) if run.best_epoch[row] >= 0 else epochs - 1
    scored = best_epoch if checkpoint == "best" else epochs - 1
    logger = TensorBoardLogger(save_dir=run_dir, name="", version=directory.name, default_hp_metric=False)
    for epoch in range(epochs):
        logger.log_metrics({key: values[epoch] for key, values in history.items()}, step=epoch)
    steps = run.trainer.global_step
    last = run.stacked.head_state(row, list(run.stacked.weights), list(run.stacked.biases))
    scorer.head.load_state_dict(last)
    _save_checkpoint(scorer, directory / "checkpoints" / "last.ckpt", epochs - 1, steps)
    scorer.head.load_state_dict(run.best_head_state(row))
    _save_checkpoint(scorer, directory / "checkpoints" / f"best-epoch{best_epoch:03d}.ckpt", best_epoch, steps)
    if checkpoint != "best":
        scorer.head.load_state_dict(last)

    metrics: dict[str, float] = {k: v[scored] for k, v in history.items() if k.startswith("train/")}
    device = scorer.device
    val = None
    if len(datamodule.indices("val")):
        loader = datamodule.loader(datamodule.indices("val"), shard=False, device=device)
        val = score(scorer, loader, "val", metrics_state)
        metrics.update(val.metrics)
    test = None
    if len(datamodule.indices("test")):
        loader = datamodule.loader(datamodule.indices("test"), shard=False, device=device)
        test = score(scorer, loader, "test", metrics_state)
        metrics.update(test.metrics)
        logger.log_metrics({k: v for k, v in test.metrics.items() if not math.isnan(v)}, step=epochs - 1)
    external = None
    if datamodule.test_source:
        external = score(scorer, datamodule.external_loader(device), "external", metrics_state)
        metrics.update(external.metrics)
    sizes = datamodule.describe()
    metrics.update(
        best_epoch=float(scored),
        epochs=float(epochs),
        n_train=float(sizes["n_train"]),
        n_val=float(sizes["n_val"]),
        n_test=float(sizes["n_test"]),
        seconds=seconds,
    )
    write_json(directory / "metrics.json", metrics)
    log_hparams([logger], scorer, datamodule, metrics, save_yaml=False)
    return FoldOutcome(
        fold, metrics, val, scorer, None if test is None else test.probs, None if external is None else external.probs
    )


def train_parallel(
    template: Classifier,
    datamodule: Any,
    recipe: Any,
    run_dir: Path,
    folds: list[int],
    seed: int,
    per_pass: int | None = None,
    checkpoint: str = "last",
) -> Iterator[FoldOutcome]:
    """Train ``folds`` in passes of stacked heads; yield each fold's outcome with its directory written.

    Head ``k`` starts from the weights a sequential run would draw for fold ``k`` (seeded ``seed + k``).
    """
    own = ("callbacks", "logger", "enable_progress_bar", "enable_checkpointing", "num_sanity_val_steps")
    kwargs = {k: v for k, v in recipe.kwargs.items() if k not in own}
    progress = recipe.kwargs.get("enable_progress_bar") is not False

    def make_trainer() -> L.Trainer:
        return secure_trainer(
            L.Trainer(
                **kwargs,
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=progress,
                callbacks=[*([ProgressBar()] if progress else []), *copy.deepcopy(recipe.callbacks)],
                num_sanity_val_steps=0,
            )
        )

    trainer = make_trainer()
    device = trainer.strategy.root_device
    batch = datamodule.train_batch_size(len(datamodule.split.dev))
    size = per_pass or folds_per_pass(template, batch, len(folds), device)
    scorer = fresh_model(template).to(device)
    metrics_state = EpochMetrics(template.num_classes, template.class_names, sync=False).to(device)
    for start in range(0, len(folds), size):
        chunk = folds[start : start + size]
        heads = []
        for fold in chunk:
            L.seed_everything(seed + fold, workers=True, verbose=False)
            heads.append(template.make_head())
        run = FoldParallelClassifier(template, heads, datamodule, chunk)
        if start:
            trainer = make_trainer()
        began = time.perf_counter()
        trainer.fit(run)
        log.info("folds %s trained together in one pass (%.1f s)", _span(chunk), time.perf_counter() - began)
        seconds = (time.perf_counter() - began) / len(chunk)
        for row in range(len(chunk)):
            yield _finish_fold(run, row, scorer, datamodule, run_dir, seconds, checkpoint, metrics_state)


def _span(folds: list[int]) -> str:
    return f"{folds[0]}–{folds[-1]}" if len(folds) > 1 else str(folds[0])
