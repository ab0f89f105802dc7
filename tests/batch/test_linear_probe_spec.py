"""The shipped MedMNIST linear-probe batch: 24 runs listed without touching data, every source a 2D MedMNIST name."""

from __future__ import annotations

from pathlib import Path

import pytest

from medmnist_lit.batch.spec import load_spec
from medmnist_lit.cli import main
from medmnist_lit.data.medmnist_source import PREFIX, ROOT_ENV, datasets_2d

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "experiments" / "medmnist_linear_probe.yaml"
HEADS = {"logistic", "mlp"}


def test_dry_run_lists_24_runs_and_touches_no_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "medmnist"  # where a download would go: a dry run must not create it
    monkeypatch.setenv(ROOT_ENV, str(root))
    monkeypatch.setenv("MEDMNIST_LIT_BASE_URL", "http://127.0.0.1:9/unreachable")  # any download would fail
    logs = tmp_path / "logs"
    assert main(["batch", str(SPEC), "--dry-run", "--root", str(logs)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"batch medmnist_linear_probe: 24 runs in {logs / 'medmnist_linear_probe'}"
    assert out[-1] == "would run 24 (24 new)" and len(out) == 26
    assert "pathmnist__head=logistic__seed0" in out[1] and "data.source=medmnist:pathmnist" in out[1]
    assert not root.exists() and not logs.exists()


def test_every_source_is_a_2d_medmnist_dataset_at_28_pixels_on_the_official_split() -> None:
    spec = load_spec(SPEC, root="unused")
    info = datasets_2d()
    flags: dict[str, set[str]] = {}
    for run in spec.runs:
        source, data = run.config["data"]["source"], run.config["data"]
        assert source.startswith(PREFIX), source
        flag = source[len(PREFIX) :]
        assert flag in info, f"{flag} is not a 2D MedMNIST dataset ({sorted(info)})"
        assert data["channels"] == info[flag]["n_channels"], flag  # the dataset's own channels
        assert (data["split"], data["image_size"]) == ("predefined", 28)
        flags.setdefault(flag, set()).add(run.config["model"]["head"])
    assert set(flags) == set(info) and len(flags) == 12  # all twelve, each once per head
    assert all(heads == HEADS for heads in flags.values())


def test_references_cover_every_dataset_as_fractions() -> None:
    spec = load_spec(SPEC, root="unused")
    refs = spec.references
    assert refs is not None and refs.key == "data.source" and "Table 3" in refs.citation
    assert refs.metrics == {"ACC": "test/official_acc", "AUC": "test/official_auc"}
    assert set(refs.values) == {PREFIX + flag for flag in datasets_2d()}
    assert all(set(v) == {"ACC", "AUC"} and all(0.5 <= s <= 1 for s in v.values()) for v in refs.values.values())
    assert refs.values["medmnist:pathmnist"] == {"ACC": 0.907, "AUC": 0.983}


def test_the_readme_table_shows_the_spec_s_published_numbers() -> None:
    refs = load_spec(SPEC, root="unused").references
    assert refs is not None
    section = (REPO / "README.md").read_text(encoding="utf-8").split("(`medmnist_linear_probe`)", 1)[1]
    rows = [line.split("|")[1:-1] for line in section.splitlines() if line.startswith("| ") and "MNIST |" in line]
    table = {cells[0].strip().lower(): [c.strip() for c in cells] for cells in rows}
    assert set(table) == set(datasets_2d())
    for flag, cells in table.items():
        published = refs.values[PREFIX + flag]
        assert (float(cells[3]), float(cells[4])) == (published["ACC"], published["AUC"]), flag
        assert cells[5] == cells[6] == "not run"  # ours: no download possible where this was built
