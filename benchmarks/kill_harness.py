"""SIGKILL `convert`, `predict` and `train` at random moments, then check what they left and rerun.

    python benchmarks/kill_harness.py [--data NEU-DET] [--kills 10] [--train-kills 10]

Each job runs the library function (``convert_dataset``, ``predict_files``, ``train`` /
``resume``) in a child process (spawned, so TensorFlow starts fresh) that is SIGKILLed at a
random moment. After every kill the outputs must be absent, or complete and accepted; never a
half-written file that a later step accepts. The final rerun must give the same outputs as an
uninterrupted run (convert, predict: byte-identical) or the same weights (train, resumed).
convert and predict run on the real data (predict over the validation images with a model
trained here from the demo preset); train runs the demo preset on a synthetic set. The tests
import this module and run a reduced form.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from defectscope.data.synthetic import synthesize_dataset
from defectscope.data.tfrecord_writer import convert_dataset
from defectscope.inference.batch import predict_files
from defectscope.inference.classifier import load_model
from defectscope.training.config import resolve_config
from defectscope.training.trainer import resume as resume_run
from defectscope.training.trainer import train

SPAWN = multiprocessing.get_context("spawn")


@dataclass
class KillReport:
    command: str
    kills: int = 0
    killed_after_s: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    identical: bool | None = None
    detail: dict = field(default_factory=dict)


# --- the jobs, each a library call in a child process ---


def convert_job(data: str, out: str) -> None:
    convert_dataset(data, out, num_shards=4, workers=2)


def predict_job(model: str, sources: list[str], out: str, resume: bool) -> None:
    predict_files(load_model(model), sources, out=out, resume=resume)


def train_job(data: str, config: str, out: str, resume: bool) -> None:
    if resume:
        resume_run(out)
    else:
        train(resolve_config(config, data=data, out=out))


def _run(job: Callable, *args) -> float:
    """Run ``job(*args)`` in a child to the end; its seconds."""
    started = time.perf_counter()
    process = SPAWN.Process(target=job, args=args)
    process.start()
    process.join()
    if process.exitcode != 0:
        raise RuntimeError(f"{job.__name__}{args} failed with exit code {process.exitcode}")
    return time.perf_counter() - started


def _kill_at(job: Callable, args: tuple, seconds: float) -> bool:
    """Start ``job(*args)`` in a child, SIGKILL it after ``seconds``; False when it finished."""
    process = SPAWN.Process(target=job, args=args)
    process.start()
    process.join(seconds)
    if not process.is_alive():
        return False
    process.kill()
    process.join()
    return True


# --- checks ---


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
    duration = _run(convert_job, str(data), str(reference))
    while report.kills < kills:
        moment = rng.uniform(0.1, duration)
        if _kill_at(convert_job, (str(data), str(target)), moment):
            report.kills += 1
            report.killed_after_s.append(round(moment, 2))
        _check_records(target, report)
    _run(convert_job, str(data), str(target))
    report.identical = _digests(target) == _digests(reference)
    return report


def kill_predict(model: Path, sources: list[Path], work: Path, kills: int, rng) -> KillReport:
    """Kill a prediction job again and again, continuing each time with ``resume``."""
    report = KillReport("predict --resume")
    reference, target = work / "predict-reference.csv", work / "predict-killed.csv"
    inputs = [str(s) for s in sources]
    duration = _run(predict_job, str(model), inputs, str(reference), False)
    expected = reference.read_bytes()
    partial = target.with_name(target.name + ".partial")
    while report.kills < kills:
        if target.exists():  # the last attempt finished before its kill: check it, start over
            if target.read_bytes() != expected:
                report.problems.append("a finished run differs from the uninterrupted one")
            target.unlink()
        moment = rng.uniform(0.1, duration)
        if _kill_at(predict_job, (str(model), inputs, str(target), True), moment):
            report.kills += 1
            report.killed_after_s.append(round(moment, 2))
        if target.exists() and target.read_bytes() != expected:
            report.problems.append("a partial predictions file was left under the final name")
        if partial.exists():
            report.detail["max_rows_kept"] = max(
                report.detail.get("max_rows_kept", 0), len(partial.read_bytes().splitlines())
            )
    _run(predict_job, str(model), inputs, str(target), True)
    report.identical = target.read_bytes() == expected
    report.detail["rows"] = len(expected.splitlines()) - 1
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
    report.detail["runs_compared"] = report.detail.get("runs_compared", 0) + 1
    report.detail["uninterrupted_accuracy"] = accuracy[0]
    report.detail["killed_and_resumed_accuracy"] = accuracy[1]
    report.detail["max_weight_difference"] = max(
        difference, report.detail.get("max_weight_difference", 0.0)
    )
    if abs(accuracy[0] - accuracy[1]) > 0.003:
        report.problems.append(
            f"resumed run reached {accuracy[1]:.4f}, uninterrupted {accuracy[0]:.4f}"
        )


def _run_state(run: Path) -> str:
    try:
        return json.loads((run / "state.json").read_text()).get("stage", "")
    except (OSError, ValueError):
        return ""


def kill_train(data: Path, config: str, work: Path, kills: int, rng) -> KillReport:
    """Kill training again and again, continuing with ``resume``; when a run finishes before
    its kill it is compared with the uninterrupted run and training starts over."""
    report = KillReport("train --resume")
    reference, target = work / "train-reference", work / "train-killed"
    duration = _run(train_job, str(data), config, str(reference), False)
    while report.kills < kills:
        if _run_state(target) == "done":
            _compare_runs(reference, target, report)  # finished before its kill
            shutil.rmtree(target)
        started = (target / "config.yaml").is_file()
        if not started and target.exists():
            shutil.rmtree(target)  # killed before the run folder was set up: start again
        moment = rng.uniform(2, duration)
        if _kill_at(train_job, (str(data), config, str(target), started), moment):
            report.kills += 1
            report.killed_after_s.append(round(moment, 2))
        for name in ("best.keras", "last.keras"):
            path = target / "weights" / name
            if path.exists() and path.stat().st_size < 1000:
                report.problems.append(f"truncated {name}")
    _run(train_job, str(data), config, str(target), (target / "config.yaml").is_file())
    _compare_runs(reference, target, report)
    report.identical = not report.problems and report.detail["max_weight_difference"] == 0.0
    return report


def main() -> None:
    from _paths import add_data_arguments  # this script's neighbour

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(parser, weights=False)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--train-kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        synthetic = synthesize_dataset(work / "synthetic", 40, 40, seed=args.seed)
        reports = [kill_convert(args.data, work, args.kills, rng)]
        reports.append(kill_train(synthetic, "demo", work, args.train_kills, rng))
        images = sorted((Path(args.data) / "validation" / "images").glob("*"))
        reports.append(kill_predict(work / "train-reference", images, work, args.kills, rng))
    print(f"\n{'command':<18}{'kills':>6}{'problems':>10}  final outputs")
    for report in reports:
        verdict = "identical" if report.identical else "DIFFERENT"
        if report.command.startswith("train"):
            verdict = f"{verdict} quality {report.detail}"
        print(f"{report.command:<18}{report.kills:>6}{len(report.problems):>10}  {verdict}")
        for problem in report.problems:
            print(f"    {problem}")


if __name__ == "__main__":
    main()
