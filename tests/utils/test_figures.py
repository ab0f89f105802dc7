"""Figures of one run (curves, confusion matrix, lr-find), the style module and the font fallback."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from datagen import make_image_folder
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib import font_manager
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.layout_engine import ConstrainedLayoutEngine
from tbevents import load_events

from medmnist_lit import Classifier, MedMNISTDataModule
from medmnist_lit.callbacks import EpochNumberCheckpoint, RunArtifacts, run_artifacts
from medmnist_lit.callbacks.run_artifacts import checkpoint_epoch
from medmnist_lit.utils import fonts
from medmnist_lit.utils.figure_style import metric_label, save_figure, settings_line, style
from medmnist_lit.utils.plots import confusion_figure, curves_figure, lr_find_figure

NAMES = ["腹部CT", "Рука", "صدر", "ChestCT"]
MATRIX = np.array([[9, 1, 0, 0], [0, 8, 2, 0], [1, 0, 9, 0], [0, 0, 0, 10]])


def _history(epochs: int) -> dict[str, list[float]]:
    e = np.arange(epochs)
    return {
        "train/loss": list(1.5 * np.exp(-e / 3) + 0.2),
        "val/loss": list(1.5 * np.exp(-e / 3) + 0.3),
        "train/acc": list(1 - 0.7 * np.exp(-e / 3)),
        "val/acc": list(0.95 - 0.7 * np.exp(-e / 3)),
    }


@pytest.fixture
def quiet(caplog: pytest.LogCaptureFixture):
    """Every warning raised inside, and every log record of WARNING and above (matplotlib's font manager logs)."""
    caplog.set_level(logging.WARNING)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def _drawn(fig):
    with style():
        canvas = FigureCanvasAgg(fig)  # as TensorBoard's add_figure renders: no bbox_inches="tight"
        canvas.draw()
    return canvas.get_renderer()


def test_curves_mark_the_checkpoint_with_integer_epochs_and_one_legend(tmp_path: Path, quiet) -> None:
    fig = curves_figure(_history(9), name="run/version_0", subtitle="logistic · batch 64", checkpoint_epoch=6)
    _drawn(fig)
    for ax in fig.axes:
        marks = [line for line in ax.get_lines() if list(line.get_xdata()) == [6, 6]]
        assert len(marks) == 1  # the vertical line at the scored epoch
        assert "checkpoint: epoch 6" in [t.get_text() for t in ax.texts]
        low, high = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if low <= t <= high]  # the ticks drawn
        assert ticks and all(t == int(t) and t >= 1 for t in ticks), ticks  # whole epochs, counted from 1
        assert ax.get_legend() is None
    assert len(fig.legends) == 1 and [t.get_text() for t in fig.legends[0].get_texts()] == ["training", "validation"]
    assert fig.get_suptitle().startswith("run/version_0")
    save_figure(fig, tmp_path / "curves.png")
    assert not quiet


def test_confusion_matrix_has_a_colour_bar_the_accuracy_and_non_latin_names_without_warnings(quiet) -> None:
    fig = confusion_figure(MATRIX, NAMES, "Test confusion matrix", name="run/version_0")
    renderer = _drawn(fig)
    ax, bar = fig.axes
    assert "accuracy 90.0% (36/40)" in ax.get_title()
    assert bar.get_ylabel().startswith("share of the true class")
    assert [t.get_text() for t in ax.get_xticklabels()] == NAMES
    assert sorted(t.get_text() for t in ax.texts) == sorted(str(v) for v in MATRIX.ravel())  # counts in the cells
    assert isinstance(fig.get_layout_engine(), ConstrainedLayoutEngine)
    box = fig.bbox
    for label in [*ax.get_xticklabels(), *ax.get_yticklabels()]:  # nothing cropped in TensorBoard's image
        extent = label.get_window_extent(renderer)
        assert box.x0 <= extent.x0 and extent.x1 <= box.x1 and box.y0 <= extent.y0 and extent.y1 <= box.y1
    assert not quiet, [str(w.message) for w in quiet]


def test_confusion_matrix_keeps_long_class_names_inside_the_image() -> None:
    names = [f"a rather long class name {i}" for i in range(3)]
    fig = confusion_figure(np.eye(3, dtype=int) * 5, names, "Validation confusion matrix")
    renderer = _drawn(fig)
    for label in fig.axes[0].get_xticklabels() + fig.axes[0].get_yticklabels():
        extent = label.get_window_extent(renderer)
        assert fig.bbox.x0 <= extent.x0 and extent.y0 >= fig.bbox.y0, label.get_text()


def _font_with(path: Path, chars: str, family: str) -> Path:
    """A TrueType font whose only glyphs (squares) are ``chars``."""
    from fontTools.fontBuilder import FontBuilder
    from fontTools.pens.ttGlyphPen import TTGlyphPen

    names = [".notdef", *(f"uni{ord(c):04X}" for c in chars)]
    pen = TTGlyphPen(None)
    pen.moveTo((100, 0))
    pen.lineTo((100, 700))
    pen.lineTo((900, 700))
    pen.lineTo((900, 0))
    pen.closePath()
    square = pen.glyph()
    builder = FontBuilder(1000, isTTF=True)
    builder.setupGlyphOrder(names)
    builder.setupCharacterMap({ord(c): f"uni{ord(c):04X}" for c in chars})
    builder.setupGlyf({name: square for name in names})
    builder.setupHorizontalMetrics({name: (1000, 100) for name in names})
    builder.setupHorizontalHeader(ascent=800, descent=-200)
    builder.setupNameTable({"familyName": family, "styleName": "Regular"})
    builder.setupOS2()
    builder.setupPost()
    builder.save(str(path))
    return path


def test_font_fallback_finds_an_installed_font_with_the_missing_glyphs(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(fonts, "_found", [])
    monkeypatch.setattr(fonts, "_uncovered", set())
    monkeypatch.setattr(fonts, "FALLBACKS", ())  # a CJK font of this machine would otherwise come first
    assert "AAA Test Han" not in fonts.font_families(["腹部CT"])
    fonts._found.clear()  # as in a new process, after the font was installed
    fonts._uncovered.clear()
    path = _font_with(tmp_path / "testhan.ttf", "腹部", "AAA Test Han")  # sorts before installed fonts
    manager = font_manager.fontManager
    before = list(manager.ttflist)
    manager.addfont(str(path))
    try:
        families = fonts.font_families(["腹部CT", "Рука"])
        assert families[0] == "DejaVu Sans" and "AAA Test Han" in families
        assert "AAA Test Han" in fonts.font_families()  # remembered: tick labels are drawn later, without the names
        fig = confusion_figure(MATRIX, NAMES)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with matplotlib_rc(families):  # no quiet_glyphs here: the fallback itself must leave nothing missing
                FigureCanvasAgg(fig).draw()
        assert not [w for w in caught if "missing from" in str(w.message)]
    finally:
        manager.ttflist[:] = before
        manager._findfont_cached.cache_clear()  # as addfont does


def matplotlib_rc(families: list[str]):
    import matplotlib

    return matplotlib.rc_context({"font.family": families})


def test_lr_find_clips_the_divergence_and_labels_the_suggestion(tmp_path: Path, quiet) -> None:
    lrs = np.logspace(-6, 0, 60)
    loss = 1.8 - 1.2 / (1 + np.exp(-(np.log10(lrs) + 3) * 3))
    loss[-4:] = [0.9, 3.0, 9.0, 23.0]  # the divergence spike
    fig = lr_find_figure(lrs, loss, 3.2e-3, name="lr/version_0")
    ax = fig.axes[0]
    low, high = ax.get_ylim()
    assert ax.get_xscale() == "log"
    assert low < loss.min() and 1.8 <= high < 3.0
    texts = [t.get_text() for t in ax.texts]
    assert "suggested lr = 3.2e-3" in texts and "off the axis: up to 23 ↑" in texts
    assert fig.get_suptitle().startswith("lr/version_0")
    save_figure(fig, tmp_path / "lr_find.png")
    assert not quiet


def test_settings_line_and_axis_names() -> None:
    sgd = {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.01, "momentum": 0.0}}
    line = settings_line({"head": "logistic", "optimizer": sgd}, {"batch_size": 64, "split": "holdout"}, 10)
    assert line == "logistic · SGD lr=0.01 · batch 64 · 10 epochs · holdout"
    mlp = {"head": "mlp", "hidden_sizes": [512, 512], "dropout": 0.2, "optimizer": None}
    adam = {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.001}}
    data = {"batch_size": "full", "split": "kfold", "folds": 5, "train_fraction": 0.2}
    expected = "MLP 512-512 dropout 0.2 · Adam lr=0.001 · full batch · 1 epoch · 5-fold · 20% of training data"
    assert settings_line(mlp, data, 1, adam) == expected
    assert metric_label("val/acc") == "validation accuracy" and metric_label("test/loss") == "test loss"
    assert metric_label("val/acc_std") == "validation accuracy (std)" and metric_label("odd") == "odd"


def test_checkpoint_epoch_reads_the_best_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "best-epoch006.ckpt"
    torch.save({"epoch": 5, "state_dict": {}}, path)
    assert checkpoint_epoch(SimpleNamespace(checkpoint_callback=SimpleNamespace(best_model_path=str(path)))) == 6
    assert checkpoint_epoch(SimpleNamespace(checkpoint_callback=None)) is None
    missing = SimpleNamespace(checkpoint_callback=SimpleNamespace(best_model_path=str(tmp_path / "gone.ckpt")))
    assert checkpoint_epoch(missing) is None


def test_a_fit_titles_its_figures_and_marks_the_scored_checkpoint(tmp_path: Path, monkeypatch) -> None:
    drawn = {}

    def keep(fig, path, **kwargs):
        drawn[Path(path).name] = fig
        save_figure(fig, path, **kwargs)

    monkeypatch.setattr(run_artifacts, "save_figure", keep)
    source = make_image_folder(tmp_path / "data", {"Рука": 24, "腹部CT": 24}, size=8)
    data = MedMNISTDataModule(source=str(source), batch_size=16, test_fraction=0.25)
    checkpoint = EpochNumberCheckpoint(
        monitor="val/loss", filename="best-epoch{epoch_number:03d}", auto_insert_metric_name=False
    )
    logger = TensorBoardLogger(tmp_path / "logs", name="figs", version="v", default_hp_metric=False)
    trainer = L.Trainer(max_epochs=3, logger=logger, callbacks=[checkpoint, RunArtifacts()], enable_progress_bar=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(Classifier(optimizer={"class_path": "torch.optim.SGD", "init_args": {"lr": 0.05}}), data)
        trainer.test(ckpt_path="best", datamodule=data, verbose=False)
    assert not [w for w in caught if "Glyph" in str(w.message)]
    best = int(Path(checkpoint.best_model_path).stem[-3:])
    curves = drawn["curves.png"]
    assert curves.get_suptitle().startswith("figs/v")
    assert [t.get_text() for t in curves.axes[0].texts] == [f"checkpoint: epoch {best}"]
    assert any(list(line.get_xdata()) == [best, best] for line in curves.axes[0].get_lines())
    confusion = drawn["confusion_matrix.png"]
    assert "accuracy" in confusion.axes[0].get_title() and len(confusion.axes) == 2
    subtitles = [a.get_text() for a in confusion.artists if hasattr(a, "get_text")]
    assert subtitles == ["logistic · SGD lr=0.05 · batch 16 · 3 epochs · holdout"]
    images = load_events(tmp_path / "logs" / "figs" / "v").Tags()["images"]
    assert {"val/confusion_matrix", "test/confusion_matrix"} <= set(images)


def test_lr_find_shades_the_smoothers_warm_up_and_limits_the_axis_without_it() -> None:
    from medmnist_lit.utils.plots import lr_find_figure, smoothing_warmup

    assert smoothing_warmup(100) == 25 and smoothing_warmup(10) == 10
    # Lightning's smoothed loss of a flat real loss of 2.0: low at first (bias-corrected one step late)
    steps = np.arange(1, 101)
    losses = 2.0 * (1 - 0.98**steps) / (1 - 0.98 ** (steps + 1))
    losses[60:] -= np.linspace(0, 0.5, 40)  # then a real descent
    lrs = np.logspace(-6, 0, 100)
    ax = lr_find_figure(lrs, losses, None).axes[0]
    low, _ = ax.get_ylim()
    assert low > losses[0]  # the warm-up's low start does not set the axis
    assert [p for p in ax.patches if p.get_x() == pytest.approx(lrs[0])]  # the shaded warm-up starts at the first rate
