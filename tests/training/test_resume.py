"""A training process killed with SIGKILL mid-run resumes from its last completed epoch."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import TINY_CONFIG_YAML, results_rows
from tests.helpers import cli_command as command

pytestmark = pytest.mark.slow


def finetune_epochs_done(run: Path) -> int:
    return len(results_rows(run, "finetune"))


def test_sigkill_then_resume(synthetic_records: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG_YAML)
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
    rows = results_rows(run, "finetune")
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
    expected = results_rows(reference, "finetune")
    for got, want in zip(rows, expected, strict=True):
        for key in ("loss", "accuracy", "selection_loss", "selection_accuracy"):
            assert float(got[key]) == pytest.approx(float(want[key]), rel=1e-4), (got, want)


def test_early_stopping_counts_the_epochs_run_before_a_resume() -> None:
    """The best so far and the epochs after it: a phase-1 best leaves every fine-tuning epoch
    counted, a tie does not reset the count, and a run with no epoch yet counts none."""
    from defectscope.training.callbacks import best_so_far

    head = (0.8, 0, -0.5)
    assert best_so_far([head]) == (head, 0)
    assert best_so_far([head, (0.7, 1, -0.6), (0.8, 0, -0.5)]) == (head, 2)
    assert best_so_far([head, (0.9, 1, -0.4), (0.9, 1, -0.4), (0.85, 1, -0.4)]) == (
        (0.9, 1, -0.4),
        2,
    )
