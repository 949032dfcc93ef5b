"""A training process killed with SIGKILL mid-run resumes from its last completed epoch."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def finetune_epochs_done(run: Path) -> int:
    path = run / "results.csv"
    if not path.is_file():
        return 0
    with open(path) as handle:
        return sum(1 for row in csv.DictReader(handle) if row["phase"] == "finetune")


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "defectscope", *args]


def test_sigkill_then_resume(synthetic_records: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "weights: none\nimage_size: 71\nbatch_size: 8\nhead: {epochs: 2, batch_size: 8}\n"
        "finetune: {epochs: 4, unfreeze_from: block14, patience: 0}\n"
    )
    train = command(
        "train", "--data", str(synthetic_records), "--out", str(run), "--config", str(config)
    )
    process = subprocess.Popen(train, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while finetune_epochs_done(run) < 2 and process.poll() is None:
        assert time.monotonic() < deadline, "training made no progress"
        time.sleep(0.2)
    assert process.poll() is None, f"training ended before the kill: {process.stderr.read()}"
    os.kill(process.pid, signal.SIGKILL)  # mid-epoch 3 (or between epochs)
    process.wait()
    killed_at = finetune_epochs_done(run)
    assert 2 <= killed_at < 4
    assert not (run / "weights" / "last.keras").exists()
    resumed = subprocess.run(
        command("train", "--resume", str(run)), capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stderr
    with open(run / "results.csv") as handle:
        rows = [r for r in csv.DictReader(handle) if r["phase"] == "finetune"]
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]  # no epoch lost, none run twice
    assert "head epoch" not in resumed.stderr  # phase 1 was not redone
    assert (run / "weights" / "last.keras").is_file()
    assert (run / "evaluation" / "metrics.json").is_file()

    # the resumed run repeats the uninterrupted one: same batches, augmentation and dropout
    reference = tmp_path / "reference"
    uninterrupted = command(
        "train", "--data", str(synthetic_records), "--out", str(reference), "--config", str(config)
    )
    assert subprocess.run(uninterrupted, capture_output=True, timeout=600).returncode == 0
    with open(reference / "results.csv") as handle:
        expected = [r for r in csv.DictReader(handle) if r["phase"] == "finetune"]
    for got, want in zip(rows, expected, strict=True):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert float(got[key]) == pytest.approx(float(want[key]), rel=1e-4), (got, want)
