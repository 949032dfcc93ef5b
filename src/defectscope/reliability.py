"""Kill harness: SIGKILL a command at random moments, then check what it left and rerun it.

After every kill the outputs must be either absent, or complete and accepted; never a
half-written file that a later step accepts. The final rerun must give the same outputs as an
uninterrupted run (convert, predict) or the same quality (train, via ``--resume``).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class KillReport:
    command: str
    kills: int = 0
    killed_after_s: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    identical: bool | None = None
    detail: dict = field(default_factory=dict)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "defectscope", *map(str, args)]


def _run(args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def _kill_at(args: list[str], seconds: float) -> bool:
    """Start ``args``, SIGKILL it after ``seconds``; False when it finished before."""
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        process.wait(timeout=seconds)
        return False
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        return True


def _digests(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file() and not p.name.startswith(".")
    }


def _check_records(folder: Path, report: KillReport) -> None:
    """A folder with a manifest must be complete: every shard present with its hash."""
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        return
    manifest = json.loads(manifest_path.read_text())
    digests = _digests(folder)
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            if digests.get(shard["file"]) != shard["sha256"]:
                report.problems.append(f"manifest accepted with a bad shard {shard['file']}")


def kill_convert(data: Path, work: Path, kills: int, rng: random.Random) -> KillReport:
    report = KillReport("convert")
    reference, target = work / "convert-reference", work / "convert-killed"
    duration = _run(_cli("convert", "--data", data, "--out", reference))
    args = _cli("convert", "--data", data, "--out", target)
    while report.kills < kills:
        moment = rng.uniform(0.1, duration)
        if _kill_at(args, moment):
            report.kills += 1
            report.killed_after_s.append(round(moment, 2))
        _check_records(target, report)
    _run(args)
    report.identical = _digests(target) == _digests(reference)
    return report


def kill_predict(model: Path, sources: list[Path], work: Path, kills: int, rng) -> KillReport:
    """Kill ``predict --out`` again and again, continuing each time with ``--resume``."""
    report = KillReport("predict --out --resume")
    reference, target = work / "predict-reference.csv", work / "predict-killed.csv"
    duration = _run(_cli("predict", *sources, "--model", model, "--out", reference))
    args = _cli("predict", *sources, "--model", model, "--out", target, "--resume", "--quiet")
    expected = reference.read_bytes()
    expected_rows = len(expected.splitlines()) - 1
    partial = target.with_name(target.name + ".partial")
    while report.kills < kills:
        if target.exists():  # the last attempt finished before its kill: check it, start over
            if target.read_bytes() != expected:
                report.problems.append("a finished run differs from the uninterrupted one")
            target.unlink()
        moment = rng.uniform(0.1, duration)
        if _kill_at(args, moment):
            report.kills += 1
            report.killed_after_s.append(round(moment, 2))
        if target.exists() and target.read_bytes() != expected:
            report.problems.append("a partial predictions file was left under the final name")
        if partial.exists():
            report.detail["max_rows_kept"] = max(
                report.detail.get("max_rows_kept", 0), len(partial.read_bytes().splitlines())
            )
    _run(args)
    report.identical = target.read_bytes() == expected
    report.detail["rows"] = expected_rows
    return report


def _weights_difference(first: Path, second: Path) -> float:
    """Largest absolute difference between the weights of two .keras files."""
    import keras
    import numpy as np

    a, b = (keras.saving.load_model(path, safe_mode=True) for path in (first, second))
    return max(
        float(np.max(np.abs(x - y))) if x.size else 0.0
        for x, y in zip(a.get_weights(), b.get_weights(), strict=True)
    )


def _compare_runs(reference: Path, target: Path, report: KillReport) -> None:
    """A resumed run must match the uninterrupted one: weights and validation accuracy."""
    accuracy = [
        json.loads((run / "evaluation" / "metrics.json").read_text())["accuracy"]
        for run in (reference, target)
    ]
    difference = _weights_difference(
        reference / "weights" / "best.keras", target / "weights" / "best.keras"
    )
    report.detail.setdefault("runs_compared", 0)
    report.detail["runs_compared"] += 1
    report.detail["uninterrupted_accuracy"] = accuracy[0]
    report.detail["killed_and_resumed_accuracy"] = accuracy[1]
    report.detail["max_weight_difference"] = max(
        difference, report.detail.get("max_weight_difference", 0.0)
    )
    if abs(accuracy[0] - accuracy[1]) > 0.003:
        report.problems.append(
            f"resumed run reached {accuracy[1]:.4f}, uninterrupted {accuracy[0]:.4f}"
        )


def kill_train(data: Path, config: str, work: Path, kills: int, rng) -> KillReport:
    """Kill ``train`` again and again, continuing with ``--resume``; when a run finishes
    before its kill it is compared with the uninterrupted run and training starts over."""
    report = KillReport("train --resume")
    reference, target = work / "train-reference", work / "train-killed"
    duration = _run(_cli("train", "--data", data, "--out", reference, "--config", config))
    fresh = _cli("train", "--data", data, "--out", target, "--config", config)
    resume = _cli("train", "--resume", target)
    while report.kills < kills:
        state = target / "state.json"
        if state.is_file() and json.loads(state.read_text()).get("done"):
            _compare_runs(reference, target, report)  # finished before its kill
            shutil.rmtree(target)
        started = (target / "config.yaml").is_file()
        if not started and target.exists():
            shutil.rmtree(target)  # killed before the run folder was set up: start again
        moment = rng.uniform(2, duration)
        if _kill_at(resume if started else fresh, moment):
            report.kills += 1
            report.killed_after_s.append(round(moment, 2))
        for name in ("best.keras", "last.keras"):
            path = target / "weights" / name
            if path.exists() and path.stat().st_size < 1000:
                report.problems.append(f"truncated {name}")
    _run(resume if (target / "config.yaml").is_file() else fresh)
    _compare_runs(reference, target, report)
    report.identical = not report.problems and report.detail["max_weight_difference"] == 0.0
    return report
