"""Chunked, resumable prediction output in CSV, JSON, JSON Lines and Parquet."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from defectscope.inference.classifier import Prediction
from defectscope.inference.writers import (
    PredictionWriter,
    ResumeError,
    partial_path,
    skip_scored,
    write_predictions,
)


def _predictions(count: int) -> list[Prediction]:
    rows = []
    for i in range(count):
        if i % 5 == 4:
            rows.append(Prediction(path=f"/d/{i}.jpg", error="not a readable image"))
        else:
            top = [("scratches", 0.75 + i / 1000), ("crazing", 0.25 - i / 1000)]
            rows.append(Prediction(f"/d/{i}.jpg", "scratches", top[0][1], top))
    return rows


@pytest.mark.parametrize("suffix", [".csv", ".json", ".jsonl", ".parquet"])
def test_every_format_reads_back(tmp_path: Path, suffix: str) -> None:
    predictions = _predictions(23)
    out = write_predictions(predictions, tmp_path / f"p{suffix}")
    assert not partial_path(out).exists()
    if suffix == ".csv":
        rows = list(csv.DictReader(out.open()))
        assert rows[1]["top_k"] == "scratches:0.751000;crazing:0.249000"
        assert rows[4]["confidence"] == "" and rows[4]["error"] == "not a readable image"
    elif suffix == ".json":
        rows = json.loads(out.read_text())
    elif suffix == ".jsonl":
        rows = [json.loads(line) for line in out.read_text().splitlines()]
    else:
        import pyarrow.parquet as pq

        rows = pq.read_table(out).to_pylist()
        assert rows[4]["confidence"] is None
        assert rows[1]["top_k"][0] == {"label": "scratches", "probability": 0.751}
    assert [r["path"] for r in rows] == [p.path for p in predictions]


def test_rows_reach_the_disk_per_chunk_and_out_only_at_the_end(tmp_path: Path) -> None:
    out = tmp_path / "p.csv"
    writer = PredictionWriter(out, chunk_rows=10)
    writer.start(resume=False)
    for prediction in _predictions(25):
        writer.add(prediction)
    assert len(partial_path(out).read_text().splitlines()) == 20 and not out.exists()
    writer.finish()
    assert len(out.read_text().splitlines()) == 26
    assert writer.counts == {"rows": 25, "predicted": 20}


def test_resume_cuts_a_torn_row_and_skips_what_was_scored(tmp_path: Path) -> None:
    out = tmp_path / "p.parquet"
    predictions = _predictions(12)
    first = PredictionWriter(out, chunk_rows=4)
    first.start(resume=False)
    for prediction in predictions[:9]:
        first.add(prediction)  # "killed" here: 8 rows flushed, 1 pending and lost
    with partial_path(out).open("a") as handle:
        handle.write('{"path": "/d/8.jpg", "lab')  # a row torn by the kill
    second = PredictionWriter(out, chunk_rows=4)
    remaining = list(skip_scored([Path(p.path) for p in predictions], second.start(resume=True)))
    assert [str(p) for p in remaining] == [p.path for p in predictions[8:]]
    for prediction in predictions[8:]:
        second.add(prediction)
    second.finish()
    import pyarrow.parquet as pq

    assert [r["path"] for r in pq.read_table(out).to_pylist()] == [p.path for p in predictions]
    assert second.counts == {"rows": 12, "predicted": 10}


def test_resume_with_changed_inputs_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "p.csv"
    writer = PredictionWriter(out, chunk_rows=1)
    writer.start(resume=False)
    writer.add(_predictions(1)[0])
    scored = PredictionWriter(out).start(resume=True)
    with pytest.raises(ResumeError, match="/d/0.jpg.*'/other.jpg'"):
        list(skip_scored([Path("/other.jpg")], scored))


def test_unknown_format_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="p.xlsx"):
        PredictionWriter(tmp_path / "p.xlsx")
