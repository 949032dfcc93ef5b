"""tf.distribute: strategy choice, chief-only writes, sharded input, and real 2-worker runs."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from benchmarks._cluster import local_tf_configs

from defectscope.data.pipeline import InputShard, create_dataset, open_source
from defectscope.training.distribute import (
    DistributeConfig,
    cluster_spec,
    is_chief,
    resolve_strategy_name,
)
from tests.helpers import results_rows, tiny_config


def _tf_config(workers: int, index: int, ports: list[int], kind: str = "worker") -> str:
    cluster = {"worker": [f"localhost:{port}" for port in ports[:workers]]}
    return json.dumps({"cluster": cluster, "task": {"type": kind, "index": index}})


def test_chief_is_worker_zero_or_the_chief_task(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert is_chief() and cluster_spec() == {}
    monkeypatch.setenv("TF_CONFIG", _tf_config(2, 1, [1, 2]))
    assert not is_chief()
    monkeypatch.setenv("TF_CONFIG", _tf_config(2, 0, [1, 2]))
    assert is_chief() and resolve_strategy_name(DistributeConfig()) == "multiworker"
    with_chief = {"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {}}
    with_chief["task"] = {"type": "worker", "index": 0}
    assert not is_chief(with_chief)


def test_bad_settings_repeat_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TF_CONFIG", '{"task": 3}')
    with pytest.raises(ValueError, match='TF_CONFIG.*"task": 3'):
        cluster_spec()
    with pytest.raises(ValueError, match="'tpu'"):
        DistributeConfig(strategy="tpu")
    with pytest.raises(ValueError, match="'half'"):
        DistributeConfig(mixed_precision="half")


def _ids(source, shard: InputShard) -> list[bytes]:
    dataset = create_dataset(source, image_size=32, batch_size=4, with_ids=True, shard=shard)
    return [i for _, _, ids in dataset for i in ids.numpy()]


@pytest.mark.parametrize(("workers", "level"), [(2, "file"), (3, "data")])
def test_workers_read_disjoint_parts_that_cover_the_split(
    synthetic_records: Path, workers: int, level: str
) -> None:
    source = open_source(synthetic_records, "train")  # 24 records in 2 shard files
    parts = [_ids(source, InputShard(workers, i)) for i in range(workers)]
    assert InputShard(workers, 0).level(source) == level
    assert sorted(i for part in parts for i in part) == sorted(_ids(source, InputShard()))
    assert [len(p) for p in parts] == [
        InputShard(workers, i).num_examples(source) for i in range(workers)
    ]


@pytest.mark.slow
def test_mixed_precision_and_xla_train_on_cpu(synthetic_records: Path, tmp_path: Path) -> None:
    import keras

    from defectscope.training.trainer import train

    distribute = {"mixed_precision": "bfloat16", "xla": True}
    result = train(tiny_config(synthetic_records, tmp_path / "run", distribute=distribute))
    assert keras.mixed_precision.global_policy().name == "float32"  # restored afterwards
    model = keras.saving.load_model(result.run_dir / "weights" / "last.keras")
    assert model.get_layer("xception").get_layer("block1_conv1").dtype_policy.name == (
        "mixed_bfloat16"
    )
    assert model.get_layer("predictions").dtype_policy.name == "float32"
    assert model.output.dtype == "float32"
    # bfloat16 arithmetic kept the losses finite and the run was evaluated on every image
    losses = [float(row["loss"]) for row in results_rows(result.run_dir)]
    assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses), losses
    assert result.metrics["num_images"] == 12
    assert result.metrics["accuracy"] == result.state.val_accuracy


# --- real runs: one process, MirroredStrategy over 2 logical CPUs, 2 workers on localhost ---

CONFIG = """weights: {weights}
image_size: 71
batch_size: 8
head: {{epochs: 60, batch_size: 8}}
finetune: {{epochs: {epochs}, unfreeze_from: block14, patience: 0}}
"""
TOLERANCE_IMAGES = 3  # of 36 validation images: distributed runs differ in batch and order


@pytest.fixture(scope="module")
def learnable_records(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 + 6 synthetic images per class, in 2 shards: pretrained 71 px learns it in seconds."""
    from defectscope.data.synthetic import synthesize_dataset
    from defectscope.data.tfrecord_writer import convert_dataset

    root = synthesize_dataset(tmp_path_factory.mktemp("learnable"), 12, 6, image_size=64, seed=2)
    out = tmp_path_factory.mktemp("learnable-records")
    convert_dataset(root, out, num_shards=2)
    return out


def _config(tmp_path: Path, weights: Path, epochs: int = 2) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG.format(weights=weights, epochs=epochs))
    return path


def _train(data: Path, run: Path, config: Path, *extra: str) -> list[str]:
    args = ["train", "--data", str(data), "--out", str(run), "--config", str(config), *extra]
    return [sys.executable, "-m", "defectscope", *args]


def _start_workers(args_for: list[list[str]], logs: Path) -> list[subprocess.Popen]:
    processes, configs = [], local_tf_configs(len(args_for))
    for index, (args, tf_config) in enumerate(zip(args_for, configs, strict=True)):
        env = {**os.environ, "TF_CONFIG": tf_config}
        log = open(logs / f"worker{index}.log", "w")  # noqa: SIM115 - closed with the process
        processes.append(subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT))
    return processes


def _finetune_epochs(run: Path) -> list[str]:
    return [row["epoch"] for row in results_rows(run, "finetune")]


def _accuracy(run: Path) -> float:
    return json.loads((run / "evaluation" / "metrics.json").read_text())["accuracy"]


@pytest.mark.slow
@pytest.mark.real_data
def test_mirrored_and_two_workers_match_one_process(
    learnable_records: Path, xception_weights: Path, tmp_path: Path
) -> None:
    config = _config(tmp_path, xception_weights)
    runs = tmp_path / "runs"
    single = subprocess.run(
        _train(learnable_records, runs / "single", config), capture_output=True, text=True
    )
    assert single.returncode == 0, single.stderr[-3000:]
    mirrored = subprocess.run(
        _train(
            learnable_records,
            runs / "mirrored",
            config,
            "--strategy",
            "mirrored",
            "--cpu-devices",
            "2",
        ),
        capture_output=True,
        text=True,
    )
    assert mirrored.returncode == 0, mirrored.stderr[-3000:]
    assert "mirrored strategy, 2 replicas" in mirrored.stderr
    assert "global batch 16" in mirrored.stderr

    args = _train(learnable_records, runs / "workers", config, "--strategy", "multiworker")
    workers = _start_workers([args, args], tmp_path)
    assert [p.wait(timeout=600) for p in workers] == [0, 0]
    chief_log, other_log = ((tmp_path / f"worker{i}.log").read_text() for i in range(2))
    assert "multiworker strategy, 2 replicas, this task worker-0 (chief)" in chief_log
    # the fit part of train is a subset (the selection split is carved out): record-level shards
    assert "data-level shards of train" in other_log and "worker done" in other_log

    assert sorted(p.name for p in runs.iterdir()) == [
        ".feature-cache",
        "mirrored",
        "single",
        "workers",
    ]
    written = sorted(str(p.relative_to(runs / "workers")) for p in (runs / "workers").rglob("*"))
    assert "backup" not in written and "weights/last.keras" in written
    assert _finetune_epochs(runs / "workers") == ["1", "2"]  # one row per epoch: the chief's
    saved = (runs / "workers" / "config.yaml").read_text()
    assert "strategy: multiworker" in saved

    reference = _accuracy(runs / "single")
    assert reference >= 0.8
    for name in ("mirrored", "workers"):
        assert abs(_accuracy(runs / name) - reference) <= TOLERANCE_IMAGES / 36 + 1e-9, name


@pytest.mark.slow
@pytest.mark.real_data
def test_killed_cluster_resumes_from_the_chiefs_backup(
    learnable_records: Path, xception_weights: Path, tmp_path: Path
) -> None:
    config = _config(tmp_path, xception_weights, epochs=4)
    run = tmp_path / "run"
    args = _train(learnable_records, run, config, "--strategy", "multiworker")
    workers = _start_workers([args, args], tmp_path)
    deadline = time.monotonic() + 600
    while not (run / "backup" / "training_metadata.json").is_file():
        assert time.monotonic() < deadline and all(p.poll() is None for p in workers)
        time.sleep(0.2)
    for process in workers:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    epochs_before = json.loads((run / "backup" / "training_metadata.json").read_text())["epoch"]
    assert 1 <= epochs_before < 4

    resume = [sys.executable, "-m", "defectscope", "train", "--resume", str(run)]
    workers = _start_workers([resume, resume], tmp_path)
    assert [p.wait(timeout=600) for p in workers] == [0, 0], (tmp_path / "worker0.log").read_text()
    assert _finetune_epochs(run) == ["1", "2", "3", "4"]
    assert _accuracy(run) >= 0.8 and not (run / "backup").exists()
