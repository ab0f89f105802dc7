"""Tests for medmnist_lit.splits.groups."""

from __future__ import annotations

import types

import numpy as np
import pytest

from medmnist_lit.splits import groups as groups_mod
from medmnist_lit.splits.groups import (
    GroupFileError,
    describe_groups,
    exact_duplicate_groups,
    merge_groups,
    read_group_csv,
)


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two code arrays group the samples identically (codes themselves may differ)."""
    pairs = np.unique(np.c_[a, b], axis=0)
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


# --------------------------------------------------------------------------------------------------------
# read_group_csv
# --------------------------------------------------------------------------------------------------------


def test_read_group_csv_aligns_codes_with_ids(tmp_path) -> None:
    path = tmp_path / "groups.csv"
    path.write_text(
        "id,group\nCXR/3.jpeg,p2\nCXR/1.jpeg,p1\nHand/9.jpeg,p9\nCXR/2.jpeg,p1\nCXR/3.jpeg,p2\nextra/0.png,p7\n"
    )
    ids = np.array(["CXR/1.jpeg", "CXR/2.jpeg", "CXR/3.jpeg", "Hand/9.jpeg"])
    codes = read_group_csv(path, ids)
    assert codes.dtype == np.int64
    assert codes.tolist() == [0, 0, 1, 2]  # numbered by first appearance in ids; extra CSV rows ignored


@pytest.mark.parametrize(
    ("header", "sep"),
    [("sample_id,patient", ","), ("Subject;ID", ";"), ("path\tsubject_id", "\t"), (" ID , Group ", ",")],
)
def test_read_group_csv_accepts_aliases_and_delimiters(tmp_path, header: str, sep: str) -> None:
    names = [h.strip().lower() for h in header.split(sep)]
    rows = [("a", "g1"), ("b", "g2"), ("c", "g1")]
    id_first = names[0] in ("sample_id", "path", "id")
    lines = [header] + [sep.join(r if id_first else r[::-1]) for r in rows]
    path = tmp_path / "g.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8-sig")  # with a byte-order mark
    assert read_group_csv(path, np.array(["c", "b", "a"])).tolist() == [0, 1, 0]


def test_read_group_csv_integer_ids(tmp_path) -> None:
    path = tmp_path / "g.csv"
    path.write_text("id,group\n0,x\n1,y\n2,x\n")
    assert read_group_csv(path, np.arange(3)).tolist() == [0, 1, 0]


def test_read_group_csv_missing_column(tmp_path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("id,label\na,1\n")
    with pytest.raises(GroupFileError, match=r"bad\.csv lacks the group column\(s\).*'subject'"):
        read_group_csv(path, np.array(["a"]))
    path.write_text("name,site\na,1\n")
    with pytest.raises(GroupFileError, match=r"bad\.csv lacks the id and group column"):
        read_group_csv(path, np.array(["a"]))
    path.write_text("")
    with pytest.raises(GroupFileError, match=r"bad\.csv is empty"):
        read_group_csv(path, np.array(["a"]))


def test_read_group_csv_missing_ids_shows_first_five_and_count(tmp_path) -> None:
    path = tmp_path / "part.csv"
    path.write_text("id,group\nk0,a\nk1,b\n")
    ids = np.array([f"k{i}" for i in range(9)])
    with pytest.raises(GroupFileError, match=r"part\.csv has no group for 7 of the 9 dataset ids") as info:
        read_group_csv(path, ids)
    message = str(info.value)
    assert all(f"'k{i}'" in message for i in range(2, 7))
    assert "'k7'" not in message and "'k8'" not in message


def test_read_group_csv_conflicting_duplicates(tmp_path) -> None:
    path = tmp_path / "dup.csv"
    path.write_text("id,group\na,1\nb,2\na,3\nb,2\n")
    with pytest.raises(GroupFileError, match=r"dup\.csv gives 1 id\(s\) conflicting groups, e.g. 'a' in \['1', '3'\]"):
        read_group_csv(path, np.array(["a", "b"]))


def test_read_group_csv_rejects_blank_groups_and_short_rows(tmp_path) -> None:
    path = tmp_path / "blank.csv"
    path.write_text("id,group\na,1\nb,\n")
    with pytest.raises(GroupFileError, match=r"blank\.csv line 3 has an empty id or group"):
        read_group_csv(path, np.array(["a", "b"]))
    path.write_text("id,group\na,1\nb\n")
    with pytest.raises(GroupFileError, match=r"blank\.csv line 3 has 1 field"):
        read_group_csv(path, np.array(["a", "b"]))


def test_group_file_error_is_a_value_error() -> None:
    assert issubclass(GroupFileError, ValueError)


# --------------------------------------------------------------------------------------------------------
# exact_duplicate_groups
# --------------------------------------------------------------------------------------------------------


def brute_force_codes(images: np.ndarray) -> np.ndarray:
    rows = np.ascontiguousarray(images).reshape(len(images), -1)
    return np.unique(rows, axis=0, return_inverse=True)[1].ravel()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("shape", [(16, 16), (8, 8, 3)])
def test_exact_duplicates_found(seed: int, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (300, *shape), dtype=np.uint8)
    sources = rng.choice(300, 20, replace=False)
    targets = rng.choice(np.setdiff1d(np.arange(300), sources), 40, replace=False)
    images[targets] = images[rng.choice(sources, 40)]  # plant copies, some sources copied several times
    near = images[sources[0]].copy()
    near.flat[0] ^= 1  # one pixel differs: must NOT join the cluster
    images[np.setdiff1d(np.arange(300), np.r_[sources, targets])[0]] = near
    codes = exact_duplicate_groups(images)
    assert codes.dtype == np.int64 and len(codes) == 300
    assert same_partition(codes, brute_force_codes(images))
    for t in targets:
        assert np.any(codes[t] == codes[sources])
    assert len(np.unique(codes)) == 300 - 40
    first = np.unique(codes, return_index=True)[1]
    assert np.all(np.diff(first) > 0), "codes must be numbered by first appearance"


def test_distinct_images_get_distinct_codes() -> None:
    images = np.random.default_rng(3).integers(0, 256, (500, 12, 12), dtype=np.uint8)
    images[:, 0, 0] = np.arange(500) % 256
    images[:, 0, 1] = np.arange(500) // 256  # guarantee distinctness
    assert exact_duplicate_groups(images).tolist() == list(range(500))
    assert exact_duplicate_groups(np.zeros((0, 4, 4), np.uint8)).tolist() == []


def test_exact_duplicates_on_memmap(tmp_path) -> None:
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (1000, 8, 8), dtype=np.uint8)
    images[500:] = images[:500]
    np.save(tmp_path / "x.npy", images)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    codes = exact_duplicate_groups(mapped, chunk=64)  # several chunks
    assert np.array_equal(codes[:500], codes[500:]) and len(np.unique(codes)) == 500


def test_hash_collisions_fall_back_to_exact_comparison(monkeypatch) -> None:
    class Constant:
        def __init__(self, data: object, digest_size: int) -> None:
            self.size = digest_size

        def digest(self) -> bytes:
            return b"\0" * self.size

    monkeypatch.setattr(groups_mod, "hashlib", types.SimpleNamespace(blake2b=Constant))
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (50, 4, 4), dtype=np.uint8)
    images[10] = images[3]
    codes = exact_duplicate_groups(images)
    assert same_partition(codes, brute_force_codes(images)) and len(np.unique(codes)) == 49


def test_exact_duplicates_in_many_images() -> None:
    # speed is measured in benchmarks/audit.py (60,000 images), not asserted here
    rng = np.random.default_rng(6)
    images = rng.integers(0, 256, (6_000, 64, 64), dtype=np.uint8)
    images[::100] = images[1]
    codes = exact_duplicate_groups(images)
    assert len(np.unique(codes)) == 6_000 - 60  # rows 0, 100, ... join row 1
    assert len(set(codes[::100].tolist()) | {codes[1]}) == 1


# --------------------------------------------------------------------------------------------------------
# merge_groups and describe_groups
# --------------------------------------------------------------------------------------------------------


def union_find(n: int, *codes: np.ndarray) -> np.ndarray:
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for c in codes:
        first: dict[int, int] = {}
        for i, code in enumerate(c.tolist()):
            if code in first:
                parent[find(i)] = find(first[code])
            else:
                first[code] = i
    return np.array([find(i) for i in range(n)])


def test_merge_groups_chains_across_inputs() -> None:
    duplicates = np.array([0, 0, 1, 2, 3, 4])
    subjects = np.array([10, 11, 11, 12, 12, 13])
    # 0~1 (duplicates), 1~2 (subject 11) -> {0,1,2}; 3~4 (subject 12) -> {3,4}; {5}
    assert merge_groups(duplicates, None, subjects).tolist() == [0, 0, 0, 1, 1, 2]
    assert merge_groups(None, None) is None
    assert merge_groups() is None
    assert merge_groups(np.array([7, 3, 7])).tolist() == [0, 1, 0]
    assert merge_groups(np.zeros(0, np.int64)).tolist() == []


@pytest.mark.parametrize("seed", range(5))
def test_merge_groups_matches_union_find(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b, c = (
        rng.integers(0, 60, 100),
        rng.integers(-5, 80, 100),
        rng.choice(["x", "y", "z"] * 30 + list("abcdefghij"), 100),
    )
    merged = merge_groups(a, b, c)
    assert merged is not None and merged.dtype == np.int64
    c_codes = np.unique(c, return_inverse=True)[1].ravel()
    assert same_partition(merged, union_find(100, a, b, c_codes))
    for codes in (a, b, c_codes):  # each input is a refinement of the merged grouping
        assert len(np.unique(np.c_[codes, merged], axis=0)) == len(np.unique(codes))


def test_merge_groups_rejects_length_mismatch() -> None:
    with pytest.raises(ValueError, match="equal lengths"):
        merge_groups(np.arange(3), np.arange(4))


def test_describe_groups() -> None:
    assert describe_groups(np.array([5, 5, 1, 2, 2, 2, 9])) == {
        "n_samples": 7,
        "n_groups": 4,
        "largest_group": 3,
        "n_in_shared_groups": 5,
    }
    assert describe_groups(np.zeros(0, np.int64))["n_groups"] == 0
