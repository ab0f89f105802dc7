"""Published references in a spec: validated when the spec loads, shown as labelled columns beside ours."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from medmnist_lit.batch.references import References, for_batch
from medmnist_lit.batch.report import load, markdown, variant_rows, write_tables
from medmnist_lit.batch.spec import load_spec

SOURCES = ["medmnist:a", "medmnist:b", "medmnist:c"]
CITATION = "Doe et al., Journal 1:2 (2020), Table 3"
GOOD = {"citation": CITATION, "key": "data.source", "values": {"medmnist:a": {"ACC": 0.9, "AUC": 0.95}}}


def _spec(tmp_path: Path, references: Any, **extra: Any) -> Path:
    spec = {
        "name": "probe",
        "base": {"data": {"split": "predefined"}},
        "runs": [{"name": "logistic", "model.head": "logistic"}, {"name": "mlp", "model.head": "mlp"}],
        "grid": {"data.source": SOURCES},
        "references": references,
        **extra,
    }
    path = tmp_path / "probe.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_a_valid_block_is_parsed_with_the_default_metrics(tmp_path: Path) -> None:
    refs = load_spec(_spec(tmp_path, GOOD), root=tmp_path).references
    assert refs == References(CITATION, "data.source", {"ACC": "test/official_acc", "AUC": "test/official_auc"},
                              {"medmnist:a": {"ACC": 0.9, "AUC": 0.95}})  # fmt: skip
    assert load_spec(_spec(tmp_path, None), root=tmp_path).references is None


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"citaton": "x"}, ["unknown references key 'citaton'", "citation, key, metrics, values"]),
        ({"values": {"medmnist:zzz": {"ACC": 0.9}}}, ["'medmnist:zzz'", "no run has as data.source", "medmnist:a"]),
        ({"values": {"medmnist:a": {"ACC": "high"}}}, ["references.values['medmnist:a'].ACC", "'high'"]),
        ({"values": {"medmnist:a": {"ACC": 90.7}}}, ["references.values['medmnist:a'].ACC", "[0, 1]", "90.7"]),
        ({"values": {"medmnist:a": {"ACC": True}}}, ["references.values['medmnist:a'].ACC", "True"]),
        ({"values": {"medmnist:a": {"F1": 0.5}}}, ["references.values['medmnist:a']", "unknown label 'F1'"]),
        ({"key": "data.seed"}, ["references.key 'data.seed'", "varied: model.head, data.source"]),
        ({"citation": ""}, ["references.citation"]),
        ({"metrics": {"ACC": "acc"}}, ["references.metrics", "'acc'"]),
        ({"values": {}}, ["references.values must map"]),
    ],
)
def test_a_bad_block_is_refused_in_one_line_naming_file_key_and_value(
    tmp_path: Path, change: dict[str, Any], named: list[str]
) -> None:
    path = _spec(tmp_path, {**GOOD, **change})
    with pytest.raises(ValueError) as err:
        load_spec(path, root=tmp_path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    for text in named:
        assert text in message


def test_a_value_replaced_by_an_override_has_no_run_left(tmp_path: Path) -> None:
    block = {**GOOD, "values": {"medmnist:b": {"ACC": 0.5}}}
    with pytest.raises(ValueError, match=r"'medmnist:b', which no run has as data\.source"):
        load_spec(_spec(tmp_path, block), root=tmp_path, overrides={"data.source": "medmnist:a"})


# ------------------------------------------------------------------------------------------ the tables
def _records(directory: Path, spec: Path, with_official: bool = True) -> None:
    """A finished batch of ``spec`` with synthetic records: test/official_acc = 0.5 + 0.1 × source index."""
    from medmnist_lit.batch.runner import batch_manifest

    loaded = load_spec(spec, root=directory.parent, name=directory.name)
    manifest = batch_manifest(loaded)
    directory.mkdir(parents=True)
    for i, (run, planned) in enumerate(zip(manifest["runs"], loaded.runs, strict=True)):
        (directory / run["name"]).mkdir()
        acc = 0.5 + 0.1 * SOURCES.index(run["varied"]["data.source"]) + 0.01 * (i % 2)
        metrics = {"val/acc": acc, "test/acc": acc, "n_train": 60.0, "n_val": 20.0, "n_test": 20.0}
        if with_official:
            metrics.update({"test/official_acc": acc, "test/official_auc": acc + 0.2})
        record = {**run, "status": "ok", "metrics": metrics, "config": planned.config, "seconds": 1.0, "attempt": 1}
        (directory / run["name"] / "record.json").write_text(json.dumps(record))
    (directory / "batch.json").write_text(json.dumps(manifest))


def test_reference_columns_sit_right_after_our_official_metrics(tmp_path: Path) -> None:
    spec = _spec(tmp_path, {**GOOD, "values": {"medmnist:a": {"ACC": 0.9, "AUC": 0.95}, "medmnist:c": {"ACC": 0.7}}})
    _records(tmp_path / "logs" / "probe", spec)
    batch, records = load(tmp_path / "logs" / "probe")
    columns, rows = variant_rows(batch, records)
    at = columns.index("test/official_acc")
    assert columns[at + 1] == "ref ACC" and columns[columns.index("test/official_auc") + 1] == "ref AUC"
    by_variant = {row["variant"]: row for row in rows}
    assert by_variant["logistic__source=medmnist-a"]["ref ACC"] == "0.9"
    assert by_variant["mlp__source=medmnist-a"]["ref AUC"] == "0.95"
    assert by_variant["logistic__source=medmnist-c"]["ref ACC"] == "0.7"
    assert by_variant["logistic__source=medmnist-c"]["ref AUC"] is None  # none published: – in the table
    assert by_variant["logistic__source=medmnist-b"]["ref ACC"] is None
    assert by_variant["logistic__source=medmnist-a"]["test/official_acc"] == "0.5000"  # ours, as computed

    write_tables(tmp_path / "logs" / "probe")
    text = (tmp_path / "logs" / "probe" / "results.md").read_text()
    assert "`ref ACC`, `ref AUC`: published numbers, not computed by this batch (matched by `data.source`" in text
    assert CITATION in text
    header = next(line for line in text.splitlines() if line.startswith("| variant"))
    cells = [cell.strip() for cell in header.strip("|").split("|")]
    assert cells[cells.index("test/official_acc") + 1] == "ref ACC"


def test_our_metric_is_added_where_the_table_lacks_it(tmp_path: Path) -> None:
    spec = _spec(tmp_path, GOOD)
    _records(tmp_path / "logs" / "probe", spec, with_official=False)
    batch, records = load(tmp_path / "logs" / "probe")
    columns, rows = variant_rows(batch, records)
    assert columns.index("test/official_acc") + 1 == columns.index("ref ACC") < columns.index("n_train")
    assert rows[0]["test/official_acc"] == "–" and rows[0]["ref ACC"] == "0.9"  # no record has ours yet


def test_without_references_the_tables_are_unchanged(tmp_path: Path) -> None:
    spec = _spec(tmp_path, None)
    _records(tmp_path / "logs" / "probe", spec)
    batch, records = load(tmp_path / "logs" / "probe")
    columns, _ = variant_rows(batch, records)
    assert not any(c.startswith("ref ") for c in columns)
    assert "published numbers" not in markdown(tmp_path / "logs" / "probe", batch, records, [])


def test_the_block_travels_in_batch_json_so_a_moved_or_edited_spec_changes_nothing(tmp_path: Path) -> None:
    spec = _spec(tmp_path, GOOD)
    _records(tmp_path / "logs" / "probe", spec)
    batch, records = load(tmp_path / "logs" / "probe")
    assert batch["references"]["values"] == GOOD["values"]
    _spec(tmp_path, {**GOOD, "values": {"medmnist:zzz": {"ACC": 0.1}}})  # edited after the batch ran
    refs = for_batch(batch)
    assert refs is not None and refs.values == GOOD["values"]
    spec.unlink()  # moved
    assert "ref ACC" in variant_rows(batch, records)[0]
    assert for_batch({**batch, "references": None}) is None  # a spec without a block


def test_a_batch_json_of_an_older_version_falls_back_to_the_spec_and_survives_a_broken_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec = _spec(tmp_path, GOOD)
    _records(tmp_path / "logs" / "probe", spec)
    batch, records = load(tmp_path / "logs" / "probe")
    older = {k: v for k, v in batch.items() if k != "references"}  # batch.json written before the block was kept
    refs = for_batch(older)
    assert refs is not None and refs.values == GOOD["values"]
    _spec(tmp_path, {**GOOD, "values": {"medmnist:zzz": {"ACC": 0.1}}})
    columns, _ = variant_rows(older, records)
    assert "ref ACC" not in columns and "no run has as data.source" in caplog.text
    spec.unlink()
    assert for_batch(older) is None
