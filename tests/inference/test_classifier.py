"""Loading a run or .keras file and predicting files, folders, globs and bad inputs."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import defectscope
from defectscope.inference.classifier import (
    create_image_batches,
    load_model,
    path_dataset,
    stream_images,
)
from defectscope.inference.model_files import ModelLoadError
from defectscope.inference.sources import expand_sources
from defectscope.inference.writers import write_predictions


@pytest.fixture(scope="module")
def classifier(tiny_run: Path):
    return defectscope.load_model(tiny_run)


def test_run_folder_and_keras_file_load_the_same_model(tiny_run: Path, classifier) -> None:
    by_file = load_model(tiny_run / "weights" / "best.keras")
    assert by_file.classes == classifier.classes
    assert classifier.image_size == 71


def test_predictions_follow_the_evaluation_path(
    classifier, synthetic_root: Path, tmp_path: Path
) -> None:
    jpeg = next((synthetic_root / "validation/images/scratches").glob("*.jpg"))
    grey_bmp = tmp_path / "grey.bmp"
    Image.open(jpeg).convert("L").save(grey_bmp)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG nonsense")
    results = classifier.predict([jpeg, grey_bmp, broken], top_k=2)
    assert [r.ok for r in results] == [True, True, False]
    good, grey, bad = results
    assert good.label in classifier.classes and 0.0 < good.confidence <= 1.0
    assert good.top_k[0][0] == good.label and len(good.top_k) == 2
    # the JPEG's RGB content is grey, so the grey BMP decodes to near-identical pixels
    assert grey.label == good.label
    assert "not a readable image" in bad.error
    assert bad.to_dict()["label"] == ""
    assert good.to_dict()["top_k"][0]["label"] == good.label


def test_expand_sources_handles_folders_globs_and_misses(synthetic_root: Path) -> None:
    folder = synthetic_root / "validation" / "images"
    items = list(
        expand_sources([folder, str(folder / "crazing" / "*.jpg"), "nowhere.jpg", "none*.png"])
    )
    paths = [i for i in items if isinstance(i, Path)]
    misses = [i for i in items if isinstance(i, tuple)]
    assert len(paths) == 12 + 2
    assert misses == [
        ("nowhere.jpg", "no such file or folder"),
        ("none*.png", "pattern matches no file"),
    ]


def test_write_predictions_csv_and_json(classifier, synthetic_root: Path, tmp_path: Path) -> None:
    paths = sorted((synthetic_root / "validation/images/patches").glob("*.jpg"))
    results = classifier.predict([*paths, tmp_path / "missing.jpg"])
    write_predictions(results, tmp_path / "p.json")
    rows = json.loads((tmp_path / "p.json").read_text())
    assert [bool(r["error"]) for r in rows] == [False, False, True]
    write_predictions(results, tmp_path / "p.csv")
    lines = (tmp_path / "p.csv").read_text().splitlines()
    header = "path,label,confidence,top_k,defect,defect_score,unknown,unknown_score,error"
    assert lines[0] == header and len(lines) == 4


def test_bad_model_paths(tmp_path: Path, tiny_run: Path) -> None:
    with pytest.raises(ModelLoadError, match="no run"):
        load_model(tmp_path)
    with pytest.raises(ModelLoadError, match="not a run folder, export folder"):
        load_model(tmp_path / "model.h5")
    lonely = tmp_path / "lonely.keras"
    shutil.copy(tiny_run / "weights" / "best.keras", lonely)
    with pytest.raises(ModelLoadError, match="no metadata.json beside it"):
        load_model(lonely)
    fake = tmp_path / "fake" / "best.keras"
    fake.parent.mkdir()
    fake.write_bytes(b"not a zip")
    shutil.copy(tiny_run / "weights" / "metadata.json", fake.parent)
    with pytest.raises(ModelLoadError, match="cannot load model"):
        load_model(fake)


def test_batches_match_single_predictions(classifier, synthetic_root: Path) -> None:
    paths = sorted((synthetic_root / "train/images/inclusion").glob("*.jpg"))
    together = classifier.predict(paths, batch_size=4)
    alone = [classifier.predict([p])[0] for p in paths]
    for a, b in zip(together, alone, strict=True):
        assert a.label == b.label
        assert abs(a.confidence - b.confidence) < 1e-5
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(buffer, "PNG")


def test_a_lazy_stream_is_read_a_few_batches_ahead_and_its_own_error_comes_last(
    synthetic_root: Path, tmp_path: Path
) -> None:
    paths = sorted((synthetic_root / "train/images").rglob("*.jpg"))[:6]
    drawn = []

    def lazy():
        for index in range(400):
            drawn.append(index)
            if index == 399:
                raise OSError("the path list went away")
            yield paths[index % len(paths)] if index % 7 else (f"missing-{index}.jpg", "gone")

    stream = stream_images(lazy(), 71, batch_size=4)
    names, images, errors = next(stream)
    assert len(drawn) < 100  # read ahead by a few batches, not the whole list
    assert names[0] == "missing-0.jpg" and errors[0] == "gone"
    assert names[1:] == [str(p) for p in paths[1:4]] and errors[1:] == ["", "", ""]
    assert images.shape == (4, 71, 71, 3) and images[1:].std() > 0
    rows = 4
    with pytest.raises(OSError, match="the path list went away"):
        for names, _, _ in stream:
            rows += len(names)
    assert rows == 399  # every path before the error was read and yielded


def test_paths_are_not_drawn_by_tensorflows_generator_op() -> None:
    """``Dataset.from_generator`` lowers glibc's trim threshold for the whole process."""
    dataset = path_dataset(iter(["a.jpg", ("b.jpg", "gone")]), [])
    assert [(p.decode(), e.decode()) for p, e in dataset.as_numpy_iterator()] == [
        ("a.jpg", ""),
        ("b.jpg", "gone"),
    ]
    assert b"GeneratorDataset" not in dataset._as_serialized_graph().numpy()


def test_the_image_batches_run_without_tf_datas_autotuning_thread(synthetic_root: Path) -> None:
    """Its wake-up delayed the end of about half of 360-image prediction passes by 19 s."""
    paths = [str(p) for p in sorted((synthetic_root / "train/images").rglob("*.jpg"))[:3]]
    batches = create_image_batches(iter(paths), 64, 2, "stretch", [])
    assert batches.options().autotune.enabled is False
    assert [len(names) for names, _, _ in batches] == [2, 1]
