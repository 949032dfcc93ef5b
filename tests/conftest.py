"""Shared fixtures: tiny synthetic datasets, and the real NEU-DET data and weights when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import tiny_config, tiny_detector_config

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
NEU_ROOT = Path(os.environ.get("DEFECTSCOPE_NEU_ROOT", SHARED / "data" / "NEU-DET"))
XCEPTION_WEIGHTS = Path(
    os.environ.get(
        "DEFECTSCOPE_XCEPTION_WEIGHTS", SHARED / "weights" / "xception_imagenet_notop.weights.h5"
    )
)


REQUIRE_REAL_DATA = os.environ.get("DEFECTSCOPE_REQUIRE_REAL_DATA") == "1"


def _missing(message: str) -> None:
    """Skip on a user's machine; fail where real data is required (CI)."""
    if REQUIRE_REAL_DATA:
        pytest.fail(f"{message}, and DEFECTSCOPE_REQUIRE_REAL_DATA=1")
    pytest.skip(message)


# The files that take minutes, longest first (two processes, measured in CI). ``make test`` runs
# ``pytest -n 2 --dist loadfile --no-loadscope-reorder``: the first two start at once, one per
# worker, the next two queue behind them, and the short files fill in wherever a worker is free.
# (xdist's default order, most tests first, started these last and ended on one of them alone.)
LONG_FILES = (
    "integration/test_neu_train.py",  # ~35 min: the head, then the whole default recipe
    "integration/test_neu_detect.py",  # ~19 min
    "training/test_distribute.py",
    "test_kill_harness.py",
    "deploy/test_detector_deploy.py",
    "test_notebook.py",
    "test_neu_notebook.py",
    "test_cli.py",
    "training/test_resume.py",
    "deploy/test_export.py",
    "training/test_detect.py",
)


def _place(item: pytest.Item) -> int:
    relative = item.path.relative_to(Path(__file__).parent).as_posix()
    return LONG_FILES.index(relative) if relative in LONG_FILES else len(LONG_FILES)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long files first, longest first, each file's order kept."""
    items.sort(key=_place)


@pytest.fixture(scope="session")
def neu_root() -> Path:
    """The real NEU-DET dataset (``DEFECTSCOPE_NEU_ROOT``); skips when it is not on this machine."""
    if not (NEU_ROOT / "train" / "images").is_dir():
        _missing(f"real NEU-DET not found at {NEU_ROOT} (set DEFECTSCOPE_NEU_ROOT)")
    return NEU_ROOT


@pytest.fixture(scope="session")
def xception_weights() -> Path:
    """The ImageNet Xception weights (``DEFECTSCOPE_XCEPTION_WEIGHTS``); skips when absent."""
    if not XCEPTION_WEIGHTS.is_file():
        _missing(
            f"Xception weights not found at {XCEPTION_WEIGHTS} (set DEFECTSCOPE_XCEPTION_WEIGHTS)"
        )
    return XCEPTION_WEIGHTS


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean Kaggle-layout synthetic dataset: 6 classes x (4 train, 2 validation), 64 px."""
    from defectscope.data.synthetic import synthesize_dataset

    return synthesize_dataset(tmp_path_factory.mktemp("synthetic"), 4, 2, image_size=64, seed=1)


@pytest.fixture
def synthetic_copy(synthetic_root: Path, tmp_path: Path) -> Path:
    """A private copy of the synthetic dataset, safe to damage."""
    import shutil

    return Path(shutil.copytree(synthetic_root, tmp_path / "dataset"))


@pytest.fixture(scope="session")
def synthetic_records(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TFRecords of the synthetic dataset (2 shards per split)."""
    from defectscope.data.tfrecord_writer import convert_dataset

    out = tmp_path_factory.mktemp("records")
    convert_dataset(synthetic_root, out, num_shards=2)
    return out


@pytest.fixture(scope="session")
def tiny_detector_run(synthetic_records: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny detector run (random 96 px encoder, 1 epoch). Its decoder keeps boxes of
    any confidence, so an untrained detector still gives boxes to write, draw and serve."""
    from defectscope.training.trainer import train

    run = tmp_path_factory.mktemp("detector-runs") / "tiny-detector"
    train(tiny_detector_config(synthetic_records, run))
    return run


@pytest.fixture(scope="session")
def tiny_run(synthetic_records: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny training run folder, shared by evaluation and prediction tests."""
    from defectscope.training.trainer import train

    run = tmp_path_factory.mktemp("runs") / "tiny"
    train(tiny_config(synthetic_records, run))
    return run


@pytest.fixture(scope="session")
def neu_records(neu_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The real NEU-DET converted once per test session: (folder, manifest)."""
    from defectscope.data.tfrecord_writer import convert_dataset

    out = tmp_path_factory.mktemp("neu-tfrecords")
    return out, convert_dataset(neu_root, out, num_shards=4, workers=2)
