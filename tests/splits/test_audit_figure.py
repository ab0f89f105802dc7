"""The audit's example pairs drawn side by side (image A | image B, ids, classes, r)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from medmnist_lit.data.imageset import ImageSet
from medmnist_lit.splits.audit import audit
from medmnist_lit.splits.audit_figure import leak_pairs_figure, report_pairs, save_leak_pairs
from medmnist_lit.splits.strategies import make_split


def _images(n: int, seed: int = 0) -> np.ndarray:
    """Independent blocky random images (8×8 noise blown up to 32×32): no two are alike by chance."""
    coarse = np.random.default_rng(seed).uniform(0, 255, (n, 8, 8))
    return np.kron(coarse, np.ones((1, 4, 4))).astype(np.uint8)


def test_leak_pairs_figure_shows_both_images_with_ids_classes_and_r() -> None:
    images = _images(4)
    fig = leak_pairs_figure(
        images,
        [(0, 1, 0.973, "validation ↔ training, near copy"), (2, 3, 1.0)],
        ids=["a/0.png", "b/1.png", "a/2.png", "b/3.png"],
        labels=[0, 1, 0, 1],
        class_names=["腹部CT", "Рука"],
    )
    cells = fig.subfigs
    assert [c.get_suptitle() for c in cells[:2]] == ["r = 0.973\nvalidation ↔ training, near copy", "r = 1.000\n"]
    axes = [ax for cell in cells for ax in cell.axes]
    assert [ax.get_xlabel() for ax in axes] == ["a/0.png\n腹部CT", "b/1.png\nРука", "a/2.png\n腹部CT", "b/3.png\nРука"]
    assert np.array_equal(axes[1].get_images()[0].get_array(), images[1])
    assert leak_pairs_figure(images, []) is None


def test_save_leak_pairs_draws_the_audit_reports_split_examples(tmp_path: Path) -> None:
    images = _images(60)
    images[50] = images[0]  # an exact copy
    images[51] = np.clip(images[1].astype(int) + np.random.default_rng(1).normal(0, 2, images[1].shape), 0, 255)
    labels = np.arange(60) % 3
    data = ImageSet(images, labels.astype(np.int64), ("a", "b", "c"), np.array([f"x/{i:03d}.png" for i in range(60)]))
    split = make_split(labels, strategy="holdout", test_fraction=0.3, val_fraction=0.3, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the leakage warning: expected here
        report = audit(data, split)
    pairs = report_pairs(report, data.ids)
    assert pairs and all(sorted(p[:2]) in ([0, 50], [1, 51]) for p in pairs)
    assert save_leak_pairs(tmp_path / "pairs.png", data, report)
    assert (tmp_path / "pairs.png").stat().st_size > 1000
    assert not save_leak_pairs(tmp_path / "none.png", data, {"split": None})


def test_audit_command_draws_the_pairs_it_reports(tmp_path: Path, monkeypatch, capsys) -> None:
    import shutil

    from datagen import make_image_folder

    from medmnist_lit.cli import main

    monkeypatch.setenv("MEDMNIST_LIT_CACHE", str(tmp_path / "cache"))
    source = make_image_folder(tmp_path / "imgs", {"A": 20, "B": 20})
    for k, path in enumerate(sorted((source / "A").iterdir())[:10]):  # ten exact copies: some land across the split
        shutil.copy(path, source / "A" / f"copy{k}{path.suffix}")
    figure = tmp_path / "pairs.png"
    assert main(["audit", "--data.source", str(source), "--data.group_by", "none", "--figure", str(figure)]) == 0
    assert f"figure: {figure}" in capsys.readouterr().out
    assert figure.stat().st_size > 1000
    (tmp_path / "F").write_text("a file")
    assert main(["audit", "--data.source", str(source), "--figure", str(tmp_path / "F" / "p.png")]) == 2
    assert "choose another --figure" in capsys.readouterr().err
