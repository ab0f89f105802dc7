"""The one look of every figure: slide sizes, fonts with fallback, colours, titles, epoch ticks, axis names, saving.

Figures are built with Matplotlib's object API (:class:`~matplotlib.figure.Figure`, no pyplot state) inside
:func:`style`, which applies :data:`RC` and the font fallback list only there, never globally. Ticks are created
when a figure is drawn, so drawing happens inside :func:`style` too (:func:`save_figure`).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, ParamSpec, TypeVar

from cycler import cycler
from matplotlib.figure import Figure
from matplotlib.text import Annotation

from medmnist_lit.utils.files import atomic_path
from medmnist_lit.utils.fonts import font_families, quiet_glyphs

__all__ = [
    "DPI",
    "PALETTE",
    "RC",
    "TRAIN",
    "VAL",
    "WIDE",
    "WIDTH",
    "describe_run",
    "integer_epochs",
    "metric_label",
    "new_figure",
    "save_figure",
    "settings_line",
    "style",
    "styled",
    "title",
]

#: Resolution of saved PNGs: sharp on a projector at the sizes below.
DPI = 150
#: Width in inches of a one-panel figure (about half a 16:9 slide at 150 dpi)...
WIDTH = 7.5
#: ...and of a two-panel one (a full slide).
WIDE = 10.0
#: Okabe & Ito's colour-blind-safe palette.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
#: Training curves: filled markers, solid lines; validation: hollow markers, dashed lines (distinct in grey print).
TRAIN: dict[str, Any] = {"color": "#0072B2", "marker": "o", "linestyle": "-"}
VAL: dict[str, Any] = {"color": "#D55E00", "marker": "o", "markerfacecolor": "white", "linestyle": "--"}

RC: dict[str, Any] = {
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "legend.fontsize": 10,
    "figure.titlesize": 13,
    "figure.titleweight": "bold",
    "axes.axisbelow": True,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": cycler(color=PALETTE),
    "grid.alpha": 0.35,
    "grid.linewidth": 0.6,
    "legend.frameon": False,
    "lines.linewidth": 1.8,
    "lines.markersize": 5,
    "savefig.dpi": DPI,
}

_STAGES = {
    "train": "training",
    "val": "validation",
    "test": "test",
    "external": "external test",
    "oof": "out-of-fold",
    "refit/test": "refit test",
    "folds/test": "per-fold test",
    "folds/external": "per-fold external test",
}
_METRICS = {"acc": "accuracy", "loss": "loss", "f1": "macro-F1", "auroc": "AUROC"}

P = ParamSpec("P")
R = TypeVar("R")


@contextlib.contextmanager
def style(texts: Iterable[str] = ()) -> Iterator[None]:
    """Apply :data:`RC` and a font fallback list covering ``texts`` (e.g. class names); no glyph warnings."""
    import matplotlib

    params: Any = {**RC, "font.family": font_families(texts)}
    with matplotlib.rc_context(params), quiet_glyphs():
        yield


def styled(func: Callable[P, R]) -> Callable[P, R]:
    """Run a figure-building function inside :func:`style`."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with style():
            return func(*args, **kwargs)

    return wrapper


def new_figure(width: float = WIDTH, height: float = 4.5, **kwargs: Any) -> Figure:
    """A figure drawn by the constrained layout engine, so nothing is cropped.

    ``bbox_inches="tight"`` is not enough: TensorBoard's ``add_figure`` renders the canvas as it is.
    """
    return Figure(figsize=(width, height), layout="constrained", **kwargs)


def title(fig: Figure, name: str, subtitle: str = "") -> None:
    """The figure's title: ``name`` in bold, ``subtitle`` (settings, what the marks mean) smaller below it.

    A subtitle wider than the figure is wrapped at its `` · `` separators (or spaces).
    """
    size = RC["font.size"] - 1
    # ~0.55 em per character of DejaVu Sans: the characters a line of the figure's width holds
    width = max(20, int(fig.get_figwidth() * 72 / (0.55 * size)) - 4)
    lines = _wrap(subtitle, width) if subtitle else []
    # the layout engine makes room for the suptitle only: blank lines under the name reserve the subtitle's place
    sup = fig.suptitle(name + "\n" * len(lines))
    if lines:
        fig.add_artist(
            Annotation(
                "\n".join(lines),
                xy=(0.5, 0.0),
                xycoords=sup,
                xytext=(0, 1),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=size,
                color="0.25",
            )
        )


def _wrap(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` characters, broken after `` · `` where possible."""
    import textwrap

    lines: list[str] = []
    for part in text.split(" · "):
        if lines and len(lines[-1]) + 3 + len(part) <= width:
            lines[-1] += " · " + part
        else:
            lines.extend(textwrap.wrap(part, width) or [""])
    return lines


def integer_epochs(ax: Any, epochs: int | None = None, label: str = "epoch") -> None:
    """Epochs counted from 1 on the x-axis, as whole numbers only (no epoch 0 or 2.5).

    Args:
        ax: The axes.
        epochs: The last epoch shown: the axis spans 1..``epochs``.
        label: The axis label.
    """
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
    if epochs:
        ax.set_xlim(1 - 0.3 - epochs / 50, epochs + 0.3 + epochs / 50)
    ax.set_xlabel(label)


def metric_label(key: str) -> str:
    """A readable axis name for a metric key: ``val/acc`` → ``validation accuracy``; unknown keys unchanged."""
    stage, _, name = key.rpartition("/")
    suffix = ""
    for end, words in (("_std", " (std)"), ("_mean", " (mean)")):
        if name.endswith(end):
            name, suffix = name[: -len(end)], words
    if stage not in _STAGES:
        return key
    metric = _METRICS.get(name) or (f"accuracy of class {name[4:]}" if name.startswith("acc_") else name)
    return f"{_STAGES[stage]} {metric}{suffix}"


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _optimizer(config: Mapping[str, Any] | None) -> str:
    if not config:
        return ""
    name = str(config.get("class_path", "")).rsplit(".", 1)[-1]
    args = config.get("init_args") or {}
    extra = [f"{k}={_number(args[k])}" for k in ("lr", "momentum", "weight_decay") if args.get(k)]
    return " ".join([name, *extra])


def settings_line(
    model: Mapping[str, Any],
    data: Mapping[str, Any],
    epochs: int | None = None,
    optimizer: Mapping[str, Any] | None = None,
) -> str:
    """The key settings of a run, for a subtitle: ``logistic · SGD lr=0.01 · batch 64 · 10 epochs · holdout``.

    Args:
        model: The model's hyperparameters (``head``, ``hidden_sizes``, ``dropout``, ``optimizer``,
            ``lr_scheduler``).
        data: The DataModule's hyperparameters (``batch_size``, ``split``, ``folds``, ``train_fraction``...).
        epochs: ``trainer.max_epochs``.
        optimizer: The optimizer config in effect, where ``model["optimizer"]`` is ``None`` (the default one).
    """
    parts = []
    head = model.get("head")
    if head == "mlp":
        sizes = "-".join(str(s) for s in model.get("hidden_sizes") or [])
        dropout = model.get("dropout") or 0
        parts.append(f"MLP {sizes}" + (f" dropout {dropout:g}" if dropout else ""))
    elif head:
        parts.append(str(head))
    parts.append(_optimizer(model.get("optimizer") or optimizer))
    scheduler = model.get("lr_scheduler")
    if scheduler:
        parts.append(str(scheduler.get("class_path", "")).rsplit(".", 1)[-1])
    batch = data.get("batch_size")
    if batch is not None:
        parts.append("full batch" if batch == "full" else f"batch {batch}")
    if epochs is not None and epochs > 0:
        parts.append(f"{epochs} epoch" + ("s" if epochs != 1 else ""))
    split = data.get("split")
    if split in ("kfold", "group_kfold"):
        repeats = data.get("repeats") or 1
        folds = f"{data.get('folds')}-fold" + (f" × {repeats}" if repeats > 1 else "")
        parts.append(folds if split == "kfold" else f"grouped {folds}")
    elif split:
        parts.append(str(split))
    fraction = data.get("train_fraction")
    if fraction is not None and fraction < 1:
        parts.append(f"{fraction:.0%} of training data")
    if data.get("standardize"):
        parts.append("standardized")
    return " · ".join(p for p in parts if p)


def describe_run(model: Any, datamodule: Any = None, epochs: int | None = None) -> str:
    """:func:`settings_line` of a Classifier, its DataModule and ``trainer.max_epochs`` (missing parts skipped)."""
    return settings_line(
        dict(getattr(model, "hparams", None) or {}),
        dict(getattr(datamodule, "hparams", None) or {}),
        epochs,
        getattr(model, "optimizer_config", None),
    )


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: int = DPI) -> None:
    """Save ``fig`` to ``path`` atomically, drawn inside :func:`style`."""
    with atomic_path(path) as tmp, style():
        fig.savefig(tmp, dpi=dpi)
