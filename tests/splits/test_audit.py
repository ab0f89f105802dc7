"""Tests for medmnist_lit.splits.near_duplicates and medmnist_lit.splits.audit (tiny synthetic images made here)."""

from __future__ import annotations

import dataclasses
import io
import json
import warnings

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import zoom
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from medmnist_lit.data.imageset import ImageSet
from medmnist_lit.splits import near_duplicates as nd
from medmnist_lit.splits.audit import LeakageWarning, audit, format_audit
from medmnist_lit.splits.groups import exact_duplicate_groups, near_duplicate_groups
from medmnist_lit.splits.split import Split
from medmnist_lit.splits.strategies import make_split

RELATIONS = ("val_in_train", "test_in_train", "test_in_val")


# --------------------------------------------------------------------------------------------------------
# synthetic images
# --------------------------------------------------------------------------------------------------------


def smooth_images(n: int, size: int = 64, seed: int = 0) -> np.ndarray:
    """Independent smooth random images (cubic upsampling of 6×6 noise): pairwise r stays below ~0.75."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (n, 6, 6))
    img = zoom(coarse, (1, size / 6, size / 6), order=3, mode="nearest") + rng.normal(0, 2, (n, size, size))
    return np.clip(img, 0, 255).astype(np.uint8)


def phantoms(n: int, size: int = 64, seed: int = 0) -> np.ndarray:
    """One "body part" (the same ellipse) with different insides, like scans of different patients."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[-1 : 1 : size * 1j, -1 : 1 : size * 1j]
    body = ((xx / 0.85) ** 2 + (yy / 0.65) ** 2 < 1) * 80.0
    out = np.empty((n, size, size), np.uint8)
    for k in range(n):
        img = body.copy()
        for _ in range(8):
            cx, cy, s = rng.uniform(-0.6, 0.6), rng.uniform(-0.4, 0.4), rng.uniform(0.08, 0.2)
            amplitude = rng.uniform(50, 120) * rng.choice([-1, 1])
            img += amplitude * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s * s)) * (body > 0)
        out[k] = np.clip(img + rng.normal(0, 3, img.shape) + 20, 0, 255)
    return out


def jpeg(image: np.ndarray, quality: int = 75) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(buffer))


def noisy(image: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(image + rng.normal(0, sigma, image.shape), 0, 255).astype(np.uint8)


def affine(image: np.ndarray, gain: float, offset: float) -> np.ndarray:
    return np.clip(image * gain + offset, 0, 255).astype(np.uint8)


PERTURBATIONS = {
    "exact": lambda im: im.copy(),
    "noise": lambda im: noisy(im, 4, seed=1),
    "brighter": lambda im: affine(im, 1.0, 20),
    "contrast": lambda im: affine(im, 0.8, 10),
    "jpeg": lambda im: jpeg(im, 75),
}


def planted(n_base: int = 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct smooth images plus one copy of each kind in PERTURBATIONS of the first bases.

    Returns:
        images, planted cluster per image (its base), exact cluster per image (base, or a fresh id).
    """
    base = smooth_images(n_base, seed=seed)
    images, origin = list(base), list(range(n_base))
    for k, change in enumerate(PERTURBATIONS.values()):
        images.append(change(base[k]))
        origin.append(k)
    exact = np.array([*origin[:n_base], 0, *range(n_base, n_base + len(PERTURBATIONS) - 1)])
    return np.stack(images), np.array(origin), exact


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = np.unique(np.c_[a, b], axis=0)
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


def refines(fine: np.ndarray, coarse: np.ndarray) -> bool:
    """Every group of ``fine`` lies inside one group of ``coarse``."""
    return len(np.unique(np.c_[fine, coarse], axis=0)) == len(np.unique(fine))


def brute_force_groups(images: np.ndarray, threshold: float = nd.NEAR_THRESHOLD) -> tuple[np.ndarray, int]:
    """Reference: all-pairs r of the thumbnails, flat images joined, connected components; and the pair count."""
    unit, flat = nd.standardize(nd.thumbnails(images))
    close = np.triu(unit @ unit.T >= threshold, 1)
    flat_idx = np.flatnonzero(flat)
    close[flat_idx[:, None], flat_idx[None, :]] = True
    close = np.triu(close, 1)
    i, j = np.nonzero(close)
    graph = coo_matrix((np.ones(len(i)), (i, j)), shape=(len(images),) * 2)
    return connected_components(graph, directed=False)[1], len(i)


def imageset(images: np.ndarray, labels: np.ndarray | None = None) -> ImageSet:
    n = len(images)
    labels = np.zeros(n, np.int64) if labels is None else labels
    ids = np.array([f"img{i:03d}.png" for i in range(n)])
    return ImageSet(images, labels.astype(np.int64), ("a", "b", "c"), ids)


def hand_split(n: int, test: list[int], val: list[list[int]], excluded: list[list[int]] | None = None) -> Split:
    everything = np.arange(n)
    dev = np.setdiff1d(everything, test)
    excluded = excluded or [[] for _ in val]
    as_idx = lambda v: np.array(sorted(v), dtype=np.int64)  # noqa: E731
    return Split(
        "holdout", n, as_idx(test), dev, tuple(map(as_idx, val)), tuple(map(as_idx, excluded)), 0, {"grouped": False}
    )


def naive_counts(codes: np.ndarray, split: Split) -> dict[str, list[int]]:
    """Per-fold counts by direct set membership (the definition the audit must match)."""
    out: dict[str, list[int]] = {r: [] for r in RELATIONS}
    for fold in range(split.n_folds):
        train, val = set(codes[split.train(fold)].tolist()), set(codes[split.val[fold]].tolist())
        out["val_in_train"].append(sum(c in train for c in codes[split.val[fold]].tolist()))
        out["test_in_train"].append(sum(c in train for c in codes[split.test].tolist()))
        out["test_in_val"].append(sum(c in val for c in codes[split.test].tolist()))
    return out


def no_leakage_warning(fn, *args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn(*args, **kwargs)
    assert not [w for w in caught if issubclass(w.category, LeakageWarning)]
    return result


# --------------------------------------------------------------------------------------------------------
# thumbnails and the measure
# --------------------------------------------------------------------------------------------------------


def test_thumbnails_are_cell_means_for_any_size_and_rgb() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 10, 7), dtype=np.uint8)
    thumbs = nd.thumbnails(images, grid=4)
    rows, cols = (np.arange(10) * 4) // 10, (np.arange(7) * 4) // 7
    expected = np.array([[[images[k][np.ix_(rows == a, cols == b)].mean() for b in range(4)] for a in range(4)]
                         for k in range(3)])  # fmt: skip
    np.testing.assert_allclose(thumbs.reshape(3, 4, 4), expected, rtol=1e-6)
    small = rng.integers(0, 256, (2, 3, 5), dtype=np.uint8)  # smaller than the grid: one cell per pixel
    np.testing.assert_array_equal(nd.thumbnails(small, grid=16), small.reshape(2, -1).astype(np.float32))
    rgb = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    np.testing.assert_allclose(nd.thumbnails(rgb, grid=8), rgb.mean(axis=3).reshape(2, -1), rtol=1e-6)


def test_pearson_ignores_brightness_and_contrast_but_not_content() -> None:
    a = smooth_images(2, seed=3)
    r = nd.pearson(a[[0, 0, 0]], np.stack([affine(a[0], 0.7, 30), a[0], a[1]]))
    assert r[0] > 0.999 and r[1] == pytest.approx(1.0, abs=1e-6) and r[2] < 0.8


# --------------------------------------------------------------------------------------------------------
# near_duplicate_groups
# --------------------------------------------------------------------------------------------------------


def test_finds_planted_near_duplicates_and_nothing_else() -> None:
    images, origin, _ = planted()
    result = nd.find_near_duplicates(images)
    assert same_partition(result.codes, origin)  # every planted copy joins its base; no other merges
    assert result.codes.dtype == np.int64 and result.codes[:3].tolist() == [0, 1, 2]  # first-appearance order
    assert result.n_pairs == 1 + 1 + 1 + 1 + 1  # each base 0..4 paired with its one copy


@pytest.mark.parametrize("name", list(PERTURBATIONS))
def test_each_perturbation_is_caught(name: str) -> None:
    base = smooth_images(5, seed=11)
    images = np.concatenate([base, PERTURBATIONS[name](base[2])[None]])
    codes = near_duplicate_groups(images)
    assert codes[5] == codes[2] and len(np.unique(codes)) == 5


def test_distinct_images_have_no_near_duplicates_even_with_the_same_anatomy() -> None:
    images = np.concatenate([smooth_images(150, seed=5), phantoms(40, seed=6)])
    unit, _ = nd.standardize(nd.thumbnails(images))
    r = unit @ unit.T
    np.fill_diagonal(r, 0)
    assert 0.9 < r[150:, 150:].max() < nd.NEAR_THRESHOLD  # same outline, different insides: close, not near
    result = nd.find_near_duplicates(images)
    assert len(np.unique(result.codes)) == len(images) and result.n_pairs == 0 and result.n_flat == 0
    report = no_leakage_warning(audit, imageset(images))
    for kind in ("exact", "near"):
        assert report[kind]["n_images_with_copy"] == report[kind]["n_clusters"] == report[kind]["n_pairs"] == 0
        assert report[kind]["examples"] == []
    assert report["label_conflicts"]["n_clusters"] == 0 and report["warnings"] == []


def test_clusters_are_connected_components_of_a_chain() -> None:
    a, c = smooth_images(2, seed=21).astype(np.float64)
    chain = np.stack([np.rint((1 - t) * a + t * c) for t in np.linspace(0, 1, 41)]).astype(np.uint8)
    others = smooth_images(10, seed=22)
    images = np.concatenate([chain, others])
    r_steps = nd.pearson(chain[:-1], chain[1:])
    assert r_steps.min() >= nd.NEAR_THRESHOLD  # neighbours are near-duplicates ...
    assert nd.pearson(chain[:1], chain[-1:])[0] < 0.5  # ... the ends are not at all
    codes = near_duplicate_groups(images)
    assert len(np.unique(codes[:41])) == 1  # transitivity: one cluster
    assert len(np.unique(codes)) == 1 + 10


@pytest.mark.parametrize(("rows", "cols", "spread"), [(512, 16384, 4), (16, 64, 4), (32, 100, 0)])
def test_search_is_exact_against_brute_force(monkeypatch, rows: int, cols: int, spread: int) -> None:
    # many planted chains and copies over several strips; small blocks and forced spanning forests too
    monkeypatch.setattr(nd, "_ROWS", rows)
    monkeypatch.setattr(nd, "_COLS", cols)
    monkeypatch.setattr(nd, "_SPREAD", spread)
    rng = np.random.default_rng(7)
    base = smooth_images(400, seed=8)
    copies = [noisy(base[k], rng.uniform(1, 12), seed=k) for k in rng.integers(0, 400, 300)]
    images = np.concatenate(
        [base, np.stack(copies), np.full((2, 64, 64), 7, np.uint8) + np.array([0, 2], np.uint8)[:, None, None]]
    )
    images = images[rng.permutation(len(images))]
    for threshold in (0.98, 0.9):
        expected, n_pairs = brute_force_groups(images, threshold)
        result = nd.find_near_duplicates(images, threshold=threshold)
        assert same_partition(result.codes, expected)
        assert result.n_pairs == n_pairs and result.n_flat == 2


def test_exact_duplicates_are_inside_near_groups() -> None:
    images, _, exact_expected = planted()
    images = np.concatenate([images, images[[3, 3, 7]]])  # more exact copies, one of a perturbed base
    exact, near = exact_duplicate_groups(images), near_duplicate_groups(images)
    assert same_partition(exact[: len(exact_expected)], exact_expected)
    assert refines(exact, near)
    assert len(np.unique(exact)) > len(np.unique(near))


def test_flat_images_form_one_cluster() -> None:
    flat = np.zeros((3, 32, 32), np.uint8) + np.array([0, 30, 200], np.uint8)[:, None, None]
    images = np.concatenate([flat, smooth_images(4, size=32, seed=2)])
    result = nd.find_near_duplicates(images)
    assert result.codes.tolist() == [0, 0, 0, 1, 2, 3, 4] and result.n_flat == 3 and result.n_pairs == 3


def test_memmap_rgb_and_empty_inputs(tmp_path) -> None:
    images = planted(n_base=12)[0]
    path = tmp_path / "images.npy"
    np.save(path, images)
    mapped = np.load(path, mmap_mode="r")
    assert np.array_equal(near_duplicate_groups(mapped, chunk=5), near_duplicate_groups(images))
    rgb = np.repeat(images[..., None], 3, axis=3)  # gray repeated: same thumbnails
    assert np.array_equal(near_duplicate_groups(rgb), near_duplicate_groups(images))
    assert near_duplicate_groups(np.zeros((0, 8, 8), np.uint8)).shape == (0,)
    assert near_duplicate_groups(images[:1]).tolist() == [0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"threshold": 0.0}, "threshold=0.0"), ({"threshold": 1.5}, "threshold=1.5"), ({"grid": 1}, "grid=1")],
)
def test_invalid_settings_name_the_culprit(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        near_duplicate_groups(np.zeros((2, 8, 8), np.uint8), **kwargs)
    with pytest.raises(ValueError, match=r"N×H×W"):
        near_duplicate_groups(np.zeros((8, 8), np.uint8))


def test_make_split_with_near_groups_keeps_clusters_on_one_side() -> None:
    images = planted(n_base=60)[0]
    images = np.concatenate([images, images[[10, 11, 12]]])
    labels = np.arange(len(images)) % 3
    groups = near_duplicate_groups(images)
    split = make_split(labels, strategy="kfold", folds=3, groups=groups, seed=1)
    for fold in range(split.n_folds):
        sides = [split.test, split.train(fold), split.val[fold]]
        owners = [set(groups[s].tolist()) for s in sides]
        assert not (owners[0] & owners[1]) and not (owners[0] & owners[2]) and not (owners[1] & owners[2])
    report = no_leakage_warning(audit, imageset(images, labels), split)
    assert all(report["split"]["totals"][r][k]["total"] == 0 for r in RELATIONS for k in ("exact", "near"))
    assert report["split"]["grouped"] is True and report["warnings"] == []


# --------------------------------------------------------------------------------------------------------
# audit
# --------------------------------------------------------------------------------------------------------


def leaky_data() -> tuple[ImageSet, Split]:
    """Hand-made: 0/1 exact copies, 2/3/4 near copies, 5/6 exact copies, 7..11 distinct.

    train {0, 2, 7, 8}, val {1, 3, 5, 9}, test {4, 6, 10, 11}, plus excluded {12} (a copy of 11, not trained on).
    """
    base = smooth_images(9, seed=31)
    near_1 = [noisy(base[1], 3, 1), affine(base[1], 1.0, 15)]
    images = np.stack([base[0], base[0], base[1], *near_1, base[2], base[2], *base[3:7], base[7], base[7]])
    labels = np.array([0, 1, 0, 0, 0, 2, 2, 0, 1, 2, 0, 1, 1])  # 0/1 are identical but labelled a and b
    split = hand_split(13, test=[4, 6, 10, 11], val=[[1, 3, 5, 9]], excluded=[[12]])
    return imageset(images, labels), split


def test_audit_counts_a_hand_made_split() -> None:
    data, split = leaky_data()
    with pytest.warns(LeakageWarning) as caught:
        report = audit(data, split)
    s = report["split"]
    assert (s["strategy"], s["n_folds"], s["n_test"], s["n_dev"]) == ("holdout", 1, 4, 9)
    row = s["folds"][0]
    assert (row["n_train"], row["n_val"]) == (4, 4)
    assert row["val_in_train"] == {"exact": 1, "near": 2}  # 1 (copy of 0); 1 and 3 (near 2)
    assert row["test_in_train"] == {"exact": 0, "near": 1}  # 4 (near 2); 11's copy 12 is excluded
    assert row["test_in_val"] == {"exact": 1, "near": 2}  # 6 (copy of 5); 6 and 4 (near 3)
    examples = s["examples"]
    assert examples["val_in_train"]["exact"] == [{"fold": 0, "ids": ["img001.png", "img000.png"]}]
    near_ids = [e["ids"] for e in examples["val_in_train"]["near"]]
    assert near_ids == [["img003.png", "img002.png"], ["img001.png", "img000.png"]]  # non-identical pairs first
    assert examples["val_in_train"]["near"][0]["r"] >= nd.NEAR_THRESHOLD
    assert examples["test_in_train"]["exact"] == [] and examples["test_in_train"]["near"][0]["ids"][0] == "img004.png"
    # within the data
    assert report["exact"] | {"examples": None} == {
        "n_images_with_copy": 6, "n_clusters": 3, "largest_cluster": 2, "n_pairs": 3, "examples": None
    }  # fmt: skip
    assert report["near"]["n_images_with_copy"] == 9 and report["near"]["n_clusters"] == 4
    assert report["near"]["largest_cluster"] == 3 and report["near"]["n_pairs"] == 3 + 3
    assert report["near"]["n_mixed_label_clusters"] == 1
    assert report["label_conflicts"] == {
        "n_clusters": 1, "n_images": 2, "examples": [{"ids": ["img000.png", "img001.png"], "labels": ["a", "b"]}]
    }  # fmt: skip
    # the warning names the counts and the fix
    message = str(caught[0].message)
    assert report["warnings"] == [message]
    assert "1 validation sample(s) and" not in message  # no test sample has an exact copy in training
    assert "1 validation sample(s) have an exact copy" in message
    assert "2 validation sample(s) and 1 test sample(s) have a near-duplicate" in message
    assert "--data.group_by duplicates" in message and "--data.group_by near_duplicates" in message


def test_report_is_json_and_formats() -> None:
    data, split = leaky_data()
    with pytest.warns(LeakageWarning):
        report = audit(data, split)
    assert json.loads(json.dumps(report, allow_nan=False)) == report
    assert report["measure"]["threshold"] == nd.NEAR_THRESHOLD and report["measure"]["grid"] == nd.GRID
    text = format_audit(report)
    assert "6 images in 3 cluster(s)" in text and "WARNING: Leakage" in text and "img003.png ~ img002.png" in text
    plain = no_leakage_warning(audit, data)
    assert plain["split"] is None and "split" not in format_audit(plain)


def test_an_example_pair_below_the_threshold_is_labelled_as_linked_through_its_cluster() -> None:
    data, split = leaky_data()
    with pytest.warns(LeakageWarning):
        report = audit(data, split)
    threshold = report["measure"]["threshold"]
    examples = report["split"]["examples"]["val_in_train"]["near"]
    examples[:] = [
        {"fold": 0, "ids": ["a.png", "b.png"], "r": 0.973},
        {"fold": 0, "ids": ["c.png", "d.png"], "r": 0.99},
    ]
    lines = format_audit(report).splitlines()
    assert f"      near: a.png ~ b.png (fold 0, r=0.973 < {threshold}: same cluster through images in between)" in lines
    assert "      near: c.png ~ d.png (fold 0, r=0.99)" in lines  # a direct pair needs no explanation


def test_near_only_leak_suggests_near_duplicates_only() -> None:
    data, _ = leaky_data()
    split = hand_split(13, test=[10], val=[[3, 9]])  # 3 is a near copy of 2 (train); no exact copy crosses
    with pytest.warns(LeakageWarning, match="near-duplicate") as caught:
        audit(data, split)
    message = str(caught[0].message)
    assert "exact copy" not in message and "`--data.group_by near_duplicates`" in message
    assert "--data.group_by duplicates`" not in message


def test_a_leaky_official_split_is_not_told_to_regroup() -> None:
    data, _ = leaky_data()
    split = dataclasses.replace(hand_split(13, test=[10], val=[[3, 9]]), strategy="predefined")
    with pytest.warns(LeakageWarning, match="near-duplicate") as caught:
        audit(data, split)
    message = str(caught[0].message)  # an official split is used as published: no group_by remedy
    assert "used as published" in message and "*_without_twin" in message and "group_by" not in message


def test_per_fold_counts_match_the_definition_for_many_kinds_of_split() -> None:
    images = planted(n_base=50)[0]
    images = np.concatenate([images, images[[1, 2, 2, 20, 21]], phantoms(5, seed=4)])
    labels = np.arange(len(images)) % 3
    data = imageset(images, labels)
    codes = {"exact": exact_duplicate_groups(images), "near": near_duplicate_groups(images)}
    splits = [
        make_split(labels, strategy="kfold", folds=4, repeats=2, train_fraction=0.6, seed=3),
        make_split(labels, strategy="loo", test_fraction=0.25, seed=4),
        make_split(labels, strategy="holdout", test_fraction=0.3, val_fraction=0.3, seed=5),
        make_split(labels, strategy="logo", groups=np.arange(len(images)) % 7, stratify=False, seed=0),
    ]
    for split in splits:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LeakageWarning)
            report = audit(data, split, max_fold_rows=10_000)
            totals_only = audit(data, split, max_fold_rows=0)
        assert totals_only["split"]["folds"] is None
        for kind, c in codes.items():
            expected = naive_counts(c, split)
            for relation in RELATIONS:
                got = [row[relation][kind] for row in report["split"]["folds"]]
                assert got == expected[relation], (split.strategy, kind, relation)
                t = totals_only["split"]["totals"][relation][kind]
                assert t == {
                    "total": sum(got), "max": max(got), "folds": sum(g > 0 for g in got)
                }  # fmt: skip
        # an exact copy in training is also a near copy there
        for relation in RELATIONS:
            for row in report["split"]["folds"]:
                assert row[relation]["exact"] <= row[relation]["near"]


def test_audit_rejects_a_split_of_another_dataset() -> None:
    data, _ = leaky_data()
    with pytest.raises(ValueError, match="split covers 20 samples but the dataset has 13"):
        audit(data, hand_split(20, test=[0], val=[[1]]))
