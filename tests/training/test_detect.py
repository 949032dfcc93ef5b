"""``task: detect``: the run folder of a detector, its checks, and (real weights) learning."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from defectscope.core.errors import ConfigError
from defectscope.evaluation.detection import BOX_CONFIDENCE_CANDIDATES
from defectscope.inference.detector import load_detector
from defectscope.training.checks import check_train_config
from defectscope.training.config import MAX_CROPS, DetectPhaseConfig
from defectscope.training.detect import fit_copies, pick_nms_iou
from defectscope.training.detect_parts import history_best
from defectscope.training.trainer import resume, train
from tests.helpers import (
    dense_voc_dataset,
    grey_png,
    results_rows,
    saved_detector,
    tiny_config,
    tiny_detector_config,
)


def test_a_detector_run_folder_holds_what_a_classifier_run_holds(tiny_detector_run: Path) -> None:
    run = tiny_detector_run
    for name in ("config.yaml", "splits.csv", "training_curves.png", "weights/last.keras"):
        assert (run / name).is_file(), name
    metadata = json.loads((run / "weights" / "metadata.json").read_text())
    assert metadata["task"] == "detect" and metadata["detector"]["confidence"] == 0.0
    assert metadata["detector"]["aspect_ratios"] == [0.2, 0.5, 1.0, 2.0, 5.0]  # exports decode
    assert "background" not in metadata["classes"]
    tried = metadata["nms_iou_selection_map50"]  # detect.nms_iou unset: chosen on selection
    assert list(tried) == ["0.30", "0.40", "0.50", "0.60"]
    chosen = metadata["detector"]["nms_iou"]
    assert tried[f"{chosen:.2f}"] == max(tried.values())
    shown, f1 = metadata["box_confidence"], metadata["box_confidence_selection_f1"]
    assert f1[f"{shown:.2f}"] == max(f1.values()) and len(f1) == len(BOX_CONFIDENCE_CANDIDATES)
    for saved in ("best", "last"):
        assert saved_detector(run, saved).prediction_decoder.iou_threshold == chosen, saved
    rows = results_rows(run, "detect")
    assert len(rows) == 1 and rows[0]["selection_map50"] != ""
    metrics = json.loads((run / "evaluation" / "metrics.json").read_text())
    assert metrics["task"] == "detect" and metrics["classes"] == metadata["classes"]
    assert set(metrics["per_class_ap50"]) == set(metadata["classes"])
    assert 0.0 <= metrics["map50_95"] <= metrics["map50"] <= 1.0
    assert metrics["num_images"] == 12 and metrics["measured_on"].startswith("validation")
    assert metrics["nms_iou"] == chosen and metrics["nms_iou_selection_map50"] == tried
    assert metrics["box_confidence"] == shown and 0.0 <= metrics["f1"] <= 1.0
    loose = metrics["map_at_iou"]  # where mAP@0.5 is lost: extent (looser IoU) or class
    assert list(loose) == ["0.10", "0.30", "0.50"] and loose["0.50"] == pytest.approx(
        metrics["map50"], abs=1e-6
    )
    assert 0.0 <= metrics["map50_one_class"] <= 1.0
    assert "every box in one class" in (run / "evaluation" / "report.md").read_text()
    assert (
        f"boxes shown from confidence {shown:.2f} (chosen on selection F1)"
        in (run / "evaluation" / "report.md").read_text()
    )
    for picture in ("pr_curves.png", "confusion_matrix.png", "predictions.png", "report.md"):
        assert (run / "evaluation" / picture).is_file(), picture
    assert json.loads((run / "state.json").read_text())["stage"] == "done"
    assert resume(run).metrics["map50"] == metrics["map50"]  # a finished run is returned as is


def test_detection_needs_boxes_and_a_size_the_pyramid_divides(
    synthetic_root: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="multiple of 32.*got 100"):
        check_train_config(tiny_detector_config(synthetic_root, tmp_path / "a", image_size=100))
    folders = tmp_path / "folders"
    for name in ("dent", "rust"):
        (folders / name).mkdir(parents=True)
        for index in range(3):
            (folders / name / f"{index}.png").write_bytes(grey_png())
    with pytest.raises(ConfigError, match="no box annotation"):
        check_train_config(tiny_detector_config(folders, tmp_path / "b"))
    with pytest.raises(ConfigError, match="one process"):
        check_train_config(
            tiny_detector_config(
                synthetic_root, tmp_path / "c", distribute={"strategy": "mirrored"}
            )
        )
    with pytest.raises(
        ConfigError, match=r"aspect_ratios must be positive numbers, got \[1.0, 0.0\]"
    ):
        tiny_detector_config(synthetic_root, tmp_path / "d", detect={"aspect_ratios": [1.0, 0.0]})
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_the_cached_copies_follow_flips_and_transpose() -> None:
    assert fit_copies(DetectPhaseConfig()) == ["none", "horizontal", "vertical"]
    both = DetectPhaseConfig(transpose=True)
    assert fit_copies(both) == ["none", "horizontal", "vertical", "transpose"]
    assert fit_copies(DetectPhaseConfig(flips=False, transpose=True)) == ["none", "transpose"]
    assert fit_copies(DetectPhaseConfig(flips=False)) == ["none"]
    cropped = DetectPhaseConfig(crop_copies=2)
    assert fit_copies(cropped) == ["none", "horizontal", "vertical", "crop-0", "crop-1"]


def test_crop_copies_must_be_a_whole_number_within_bounds() -> None:
    for bad in (-1, 1.5, True, "2", MAX_CROPS + 1, None):
        with pytest.raises(ConfigError, match=rf"crop_copies must be .*got {re.escape(repr(bad))}"):
            DetectPhaseConfig(crop_copies=bad)
    assert DetectPhaseConfig(crop_copies=MAX_CROPS).crop_copies == MAX_CROPS


def test_classification_config_is_untouched_by_the_detect_section(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, tmp_path / "run")
    assert config.task == "classify" and config.detect.epochs == 30


@pytest.mark.real_data
@pytest.mark.slow
def test_a_small_detector_learns_to_find_synthetic_defects(
    synthetic_records: Path, xception_weights: Path, tmp_path: Path
) -> None:
    """ImageNet encoder, 128 px, 12 epochs on 24 images: mAP@0.5 far above chance (~0)."""
    config = tiny_detector_config(
        synthetic_records,
        tmp_path / "run",
        weights=str(xception_weights),
        image_size=128,
        detect={"epochs": 12, "batch_size": 4, "confidence": 0.05, "patience": 12},
    )
    result = train(config)
    # measured 0.17 (seed 0; untrained: 0.00): every box now gets an anchor, thin ones included
    assert result.metrics["map50"] >= 0.1, result.metrics


def test_tuned_encoder_blocks_train_with_the_heads_at_a_scaled_rate() -> None:
    """With ``tune_from_block`` the trainer updates the encoder's last blocks (shared with the
    detector that is saved) and Adam's first step moves them ``scale`` times less far."""
    import keras
    import numpy as np

    from defectscope.models.detector import create_detector
    from defectscope.training.detect import head_trainer
    from defectscope.training.detect_parts import scaled_rate_adam

    detector = create_detector(["dent", "rust"], image_size=96, weights=None, head_convs=1)
    trainer = head_trainer(detector, tune_from_block=13)
    assert sorted(trainer.input) == ["C13", "P3"]
    encoder = detector.backbone.image_encoder
    tuned = encoder.get_layer("block13_sepconv1").pointwise_kernel
    frozen = encoder.get_layer("block12_sepconv1").pointwise_kernel
    head = detector.classification_head.prediction_layer.kernel
    assert any(w is tuned for w in trainer.trainable_weights)
    assert not any(w is frozen for w in trainer.trainable_weights)
    before = {name: keras.ops.convert_to_numpy(w) for name, w in (("tuned", tuned), ("head", head))}
    trainer.compile(optimizer=scaled_rate_adam(0.01, [tuned], 0.1))
    rng = np.random.default_rng(0)
    features = {
        name: rng.normal(size=(2, *tensor.shape[1:])).astype(np.float32)
        for name, tensor in trainer.input.items()
    }
    truth = {
        "boxes": np.array([[[10, 10, 40, 60], [0] * 4], [[50, 20, 90, 30], [0] * 4]], np.float32),
        "labels": np.array([[0, -1], [1, -1]], np.float32),  # padded, as the pipeline pads
    }
    trainer.train_on_batch(features, truth)
    steps = {
        name: np.abs(keras.ops.convert_to_numpy(w) - before[name]).max()
        for name, w in (("tuned", tuned), ("head", head))
    }
    # Adam's first step is the learning rate itself, whatever the gradient's size
    np.testing.assert_allclose(steps["head"], 0.01, rtol=0.05)
    np.testing.assert_allclose(steps["tuned"], 0.001, rtol=0.05)


def _saved_encoder_kernel(run: Path, layer: str):
    import keras

    detector = saved_detector(run)
    return keras.ops.convert_to_numpy(
        detector.backbone.image_encoder.get_layer(layer).pointwise_kernel
    )


def test_a_run_with_tuned_encoder_blocks_caches_their_input_and_saves_them(
    synthetic_records: Path, tiny_detector_run: Path, tmp_path: Path
) -> None:
    """The cache holds P3 and block 13's input (not P4/P5), and the saved detector carries the
    tuned block: against the frozen run of the same seed (same initial weights), block 13
    changed and block 12 did not. Its detect.nms_iou is set, so it is used as is."""
    import numpy as np

    tuned = {"epochs": 1, "batch_size": 8, "confidence": 0.0, "tune_from_block": 13}
    tuned["nms_iou"] = 0.45  # set: used as is, nothing chosen
    result = train(tiny_detector_config(synthetic_records, tmp_path / "run", detect=tuned))
    assert 0.0 <= result.metrics["map50"] <= 1.0
    metadata = json.loads((tmp_path / "run" / "weights" / "metadata.json").read_text())
    assert metadata["detector"]["nms_iou"] == 0.45 and "nms_iou_selection_map50" not in metadata
    assert saved_detector(tmp_path / "run", "best").prediction_decoder.iou_threshold == 0.45
    caches = sorted((tmp_path / ".feature-cache").glob("pyramid-*"))
    assert caches
    for cache in caches:
        assert sorted(path.stem for path in cache.glob("[CP]*.npy")) == ["C13", "P3"], cache
    for layer, changed in (("block12_sepconv3", False), ("block13_sepconv2", True)):
        frozen = _saved_encoder_kernel(tiny_detector_run, layer)
        trained = _saved_encoder_kernel(tmp_path / "run", layer)
        assert (not np.array_equal(frozen, trained)) is changed, layer
    with pytest.raises(ConfigError, match="got 14"):
        tiny_detector_config(synthetic_records, tmp_path / "b", detect={"tune_from_block": 14})
    with pytest.raises(ConfigError, match="got 0.0"):
        tiny_detector_config(synthetic_records, tmp_path / "c", detect={"encoder_rate_scale": 0.0})
    with pytest.raises(ConfigError, match="nms_iou must be .*got 1.0"):
        tiny_detector_config(synthetic_records, tmp_path / "d", detect={"nms_iou": 1.0})


def test_the_nms_threshold_is_the_best_on_selection_and_ties_keep_the_default() -> None:
    """Best mAP@0.5 first, then mAP@0.5:0.95; equal scores (a selection set without boxes
    scores -1 everywhere) keep 0.5, or the candidate nearest it."""
    assert pick_nms_iou({0.3: (0.2, 0.1), 0.4: (0.3, 0.1), 0.5: (0.25, 0.2), 0.6: (0.1, 0)}) == 0.4
    assert pick_nms_iou({0.3: (0.3, 0.1), 0.4: (0.3, 0.2), 0.5: (0.3, 0.1)}) == 0.4
    assert pick_nms_iou({iou: (-1.0, -1.0) for iou in (0.3, 0.4, 0.5, 0.6)}) == 0.5
    assert pick_nms_iou({0.3: (0.0, 0.0), 0.6: (0.0, 0.0)}) == 0.6


def test_a_resumed_run_counts_the_epochs_since_its_best_towards_early_stopping(
    tmp_path: Path,
) -> None:
    """Epochs run before a kill still count: best at epoch 2 of 5 leaves 3 epochs without."""
    results = tmp_path / "results.csv"
    assert history_best(results) == ((-1.0, -1.0), 0)  # a new run
    rows = [("detect", 1, 0.1, 0.01), ("detect", 2, 0.3, 0.1), ("detect", 3, 0.2, 0.1)]
    rows += [("detect", 4, 0.3, 0.1), ("detect", 5, "", "")]  # a tie does not reset; no score
    lines = ["phase,epoch,selection_map50,selection_map50_95"] + [
        ",".join(str(v) for v in row) for row in [("head", 1, 0.9, 0.9), *rows]
    ]
    results.write_text("\n".join(lines) + "\n")
    assert history_best(results) == ((0.3, 0.1), 3)


def _heads_and_batch(boxes_per_image: int):
    """A 96 px detector, its head trainer, random cached features of two images and their
    boxes: the first image fills every row, the second holds one box and padding."""
    import numpy as np

    from defectscope.models.detector import create_detector
    from defectscope.training.detect import head_trainer

    detector = create_detector(["dent", "rust"], image_size=96, weights=None, head_convs=1)
    trainer = head_trainer(detector, tune_from_block=0)
    rng = np.random.default_rng(0)
    features = {
        name: rng.normal(size=(2, *tensor.shape[1:])).astype(np.float32)
        for name, tensor in trainer.input.items()
    }
    boxes = np.zeros((2, boxes_per_image, 4), np.float32)
    labels = np.full((2, boxes_per_image), -1.0, np.float32)
    for row in range(boxes_per_image):
        boxes[0, row] = [row, 2 * row, 30 + row, 20 + 2 * row]
        labels[0, row] = row % 2
    boxes[1, 0], labels[1, 0] = [50, 20, 90, 30], 1
    return detector, trainer, features, {"boxes": boxes, "labels": labels}


def test_an_image_whose_boxes_fill_every_row_trains() -> None:
    """KerasHub's box matcher indexed past the boxes of an image without a padding row (one
    image filling every row stopped the run); the trainer adds one."""
    import numpy as np

    from defectscope.data.detection import MIN_BOX_ROWS

    _, trainer, features, truth = _heads_and_batch(MIN_BOX_ROWS)
    trainer.compile(optimizer="adam")
    loss = trainer.train_on_batch(features, truth)
    assert np.isfinite(loss), loss


@pytest.mark.parametrize("beta", [0.1, 0.5, "ciou"])
def test_the_box_loss_is_the_configured_one(beta: float | str) -> None:
    """With the box head predicting zero deltas, the loss changes from KerasHub's Huber
    (beta 1) by exactly the smooth-L1 difference of the label encoder's box targets, or, with
    ``box_loss: ciou``, to the CIoU loss of the anchors' own boxes plus that smooth L1."""
    import numpy as np
    from keras import ops

    from defectscope.models.box_loss import CIOU_LOSS_WEIGHT, create_box_loss
    from defectscope.training.detect import _compile
    from defectscope.training.detect_parts import with_padding_row

    detector, trainer, features, truth = _heads_and_batch(3)
    kernel = detector.box_head.prediction_layer.kernel
    kernel.assign(np.zeros(kernel.shape, np.float32))  # box deltas: the zero bias
    padded = with_padding_row(truth)
    targets, classes = detector.label_encoder(
        images=ops.zeros((2, 96, 96, 3)), gt_boxes=padded["boxes"], gt_classes=padded["labels"]
    )
    targets, classes = ops.convert_to_numpy(targets), ops.convert_to_numpy(classes)
    positive = classes > -1
    assert positive.any()

    def smooth_l1(b: float) -> float:
        error = np.abs(targets[positive])
        per_coordinate = np.where(error < b, 0.5 * error**2 / b, error - 0.5 * b)
        return per_coordinate.mean(axis=-1).sum() / positive.sum()

    losses = {}
    for value in (1.0, beta):
        detect = {"box_loss": "ciou"} if value == "ciou" else {"box_loss_beta": value}
        config = tiny_detector_config(Path("unused"), Path("unused"), detect=detect)
        _compile(trainer, detector, config, steps=1)
        predicted = trainer(features)
        losses[value] = float(trainer.compute_loss(features, truth, predicted))
    if beta == "ciou":  # the config's beta (1.0 here) for the L1 term beside CIoU
        weights = positive / positive.sum()
        box_loss, weight = create_box_loss("ciou", detector, beta=1.0)
        of_anchors = float(box_loss(targets, np.zeros_like(targets), weights))
        assert weight == 1.0 and of_anchors > smooth_l1(1.0) + 0.1 * CIOU_LOSS_WEIGHT
        expected = of_anchors - smooth_l1(1.0)
    else:
        expected = smooth_l1(beta) - smooth_l1(1.0)
    # float32 sums over ~23,000 anchor terms: 1e-3 of the difference, far below any wrong weight
    np.testing.assert_allclose(losses[beta] - losses[1.0], expected, rtol=1e-3)
    assert abs(expected) > 1e-3  # the two losses do differ


def test_box_loss_beta_must_be_positive() -> None:
    for bad in (0, -0.1, True):
        with pytest.raises(ConfigError, match=repr(bad)):
            DetectPhaseConfig(box_loss_beta=bad)


def test_ema_momentum_must_be_a_number_from_zero_to_below_one() -> None:
    for bad in (-0.1, 1, 1.5, True, "0.99", None):
        with pytest.raises(
            ConfigError, match=rf"ema_momentum must be .*got {re.escape(repr(bad))}"
        ):
            DetectPhaseConfig(ema_momentum=bad)
    assert DetectPhaseConfig(ema_momentum=0.999).ema_momentum == 0.999
    assert DetectPhaseConfig().ema_momentum == 0  # off unless asked for


def test_max_detections_must_be_a_whole_number_at_least_one() -> None:
    for bad in (0, "abc", 2.5, True):
        with pytest.raises(
            ConfigError, match=f"max_detections must be a whole number >= 1, got {bad!r}"
        ):
            DetectPhaseConfig(max_detections=bad)


def test_a_run_with_the_ciou_box_loss_crop_copies_and_ema_caches_saves_and_loads(
    synthetic_records: Path, tmp_path: Path
) -> None:
    config = tiny_detector_config(
        synthetic_records,
        tmp_path / "run",
        detect={"epochs": 1, "box_loss": "ciou", "crop_copies": 2, "ema_momentum": 0.9},
    )
    result = train(config)
    assert "map50" in result.metrics
    saved_config = (tmp_path / "run" / "config.yaml").read_text()
    assert "box_loss: ciou" in saved_config and "ema_momentum: 0.9" in saved_config
    (row,) = results_rows(tmp_path / "run", "detect")
    assert np.isfinite(float(row["loss"])), row  # a NaN loss still "trains" for an epoch
    assert saved_detector(tmp_path / "run", "best") is not None
    caches = tmp_path / ".feature-cache"
    for copy in ("none", "horizontal", "vertical", "crop-0", "crop-1"):
        (folder,) = caches.glob(f"pyramid-train-fit-{copy}-*")
        assert (folder / "complete").is_file(), copy
    plain, cropped = (
        np.load(next(caches.glob(f"pyramid-train-fit-{copy}-*")) / "boxes.npy")
        for copy in ("none", "crop-0")
    )
    assert plain.shape == cropped.shape and not np.array_equal(plain, cropped)


def test_a_densely_annotated_image_trains_and_every_true_box_is_evaluated(tmp_path: Path) -> None:
    """One image with more boxes than MIN_BOX_ROWS and than the decoder's 100: the run finishes,
    evaluation counts all of them (boxes past the 64th used to be dropped from training and from
    the ground truth) and the saved detector keeps as many boxes per image."""
    from defectscope.data.detection import MIN_BOX_ROWS

    many = MIN_BOX_ROWS + 56
    data = dense_voc_dataset(tmp_path / "dense", many)
    config = tiny_detector_config(data, tmp_path / "run", selection_fraction=0.0)
    result = train(config)
    assert result.metrics["num_boxes"] == many + 1, result.metrics
    metadata = json.loads((tmp_path / "run" / "weights" / "metadata.json").read_text())
    assert metadata["detector"]["max_detections"] == many
    assert load_detector(tmp_path / "run").model.prediction_decoder.max_detections == many


def test_a_run_killed_after_its_epochs_resumes_at_the_choices_without_training_again(
    synthetic_records: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The epochs' results survive a stop while the decoding is chosen: the resumed run goes
    on from there (results.csv unchanged, stage ``trained`` in between) and finishes."""
    from defectscope.training import detect

    chosen = detect.choose_decoding

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed while choosing the decoding")

    monkeypatch.setattr(detect, "choose_decoding", killed)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(tiny_detector_config(synthetic_records, run, detect={"epochs": 2, "batch_size": 8}))
    assert json.loads((run / "state.json").read_text())["stage"] == "trained"
    epochs = results_rows(run, "detect")
    assert len(epochs) == 2 and (run / "weights" / "last.keras").is_file()
    monkeypatch.setattr(detect, "choose_decoding", chosen)
    result = resume(run)
    assert results_rows(run, "detect") == epochs  # the same rows, timings included
    assert 0.0 <= result.metrics["map50"] <= 1.0
    chosen_iou = json.loads((run / "weights" / "metadata.json").read_text())["detector"]["nms_iou"]
    assert saved_detector(run, "last").prediction_decoder.iou_threshold == chosen_iou
