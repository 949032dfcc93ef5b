"""``defectscope export``: SavedModel, TFLite and ONNX (fp32 and int8), each checked for parity.

Each export is a folder with the model and a ``metadata.json`` (classes, input, preprocessing,
version, source run, validation accuracy at export, parity figures). Parity on the validation
split is part of the export: fp32 formats must agree with the Keras model on every top-1 class,
int8 formats may lose at most 0.3 percentage points of accuracy.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import yaml

from defectscope.core.atomic_io import atomic_write_json
from defectscope.core.errors import ConfigError, ExportError
from defectscope.core.files import prepare_output_folder
from defectscope.core.memory import collecting_garbage
from defectscope.data.augment import AugmentConfig
from defectscope.data.pipeline import create_dataset
from defectscope.deploy.export_detector import (
    detector_calibration,
    detector_parity,
    detector_records,
)
from defectscope.inference.backends import BACKENDS, KerasBackend
from defectscope.inference.model_files import METADATA_NAME, locate_model, read_metadata
from defectscope.inference.scores import softmax

FORMATS = ("savedmodel", "tflite", "tflite-int8", "onnx", "onnx-int8")
MAX_INT8_ACCURACY_LOSS = 0.003
log = logging.getLogger(__name__)


def run_folder_of(model_file: Path) -> Path:
    return model_file.parent.parent if model_file.parent.name == "weights" else model_file.parent


def _calibration_batches(data: str, image_size: int, count: int, resize: str, seed: int = 0):
    """Up to ``count`` un-augmented training images, shuffled, one at a time (float32)."""
    dataset = create_dataset(
        data,
        "train",
        image_size=image_size,
        resize=resize,
        batch_size=1,
        training=True,
        augment=_no_augmentation(),
        seed=seed,
    )
    for index, (images, _) in enumerate(dataset):
        if index >= count:
            return
        yield images.numpy()


def _no_augmentation() -> AugmentConfig:
    return AugmentConfig(
        flip=False, rotate90=False, brightness=0, contrast=0, noise_prob=0, blur_prob=0
    )


def _write_savedmodel(keras_model, folder: Path) -> Path:
    keras_model.export(str(folder / "saved_model"), format="tf_saved_model", verbose=False)
    return folder / "saved_model"


def _write_tflite(keras_model, folder: Path, calibration) -> Path:
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as scratch:
        saved = _write_savedmodel(keras_model, Path(scratch))
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
        if calibration is not None:  # int8 weights and activations, float input and output
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ([batch] for batch in calibration())
        (folder / "model.tflite").write_bytes(converter.convert())
    return folder / "model.tflite"


FLOAT_ENTRY_CONVS = 2  # block1_conv1/conv2 see the raw image range; int8 there costs accuracy


def _float_nodes(graph) -> list[str]:
    """ONNX nodes kept in float: the classifier (dense, softmax) and block1's two convolutions.

    Measured on NEU-DET (seed 0, 360 validation images): with only the classifier in float,
    MinMax int8 lost 0.83 pp; keeping block1 in float too loses nothing.
    """
    head = [node.name for node in graph.node if node.op_type in ("MatMul", "Gemm", "Softmax")]
    convs = [node.name for node in graph.node if node.op_type == "Conv"]  # topological order
    return head + convs[:FLOAT_ENTRY_CONVS]


def _keras_to_onnx(keras_model, target: Path) -> None:
    """tf2onnx through Keras, collecting its cyclic garbage as it goes: exporting a 27M-parameter
    detector peaked at 5.3 GB instead of 9.5 and held 1.0 GB afterwards instead of 5.3, for
    2 s more (benchmarks/export_memory.py)."""
    with collecting_garbage(every_seconds=2.0):
        keras_model.export(str(target), format="onnx", verbose=False)


def _write_onnx(keras_model, folder: Path, calibration) -> Path:
    target = folder / "model.onnx"
    if calibration is None:
        _keras_to_onnx(keras_model, target)
        return target
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self, input_name: str) -> None:
            self.input_name, self.batches = input_name, iter(calibration())

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {self.input_name: batch}

    with tempfile.TemporaryDirectory() as scratch:
        fp32, prepared = Path(scratch) / "fp32.onnx", Path(scratch) / "prepared.onnx"
        _keras_to_onnx(keras_model, fp32)
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        graph = onnx.load(str(prepared)).graph
        quantize_static(
            str(prepared),
            str(target),
            Reader(graph.input[0].name),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            # 7-bit weights: on x86 CPUs without VNNI (AVX2 alone, as on the AMD hosts here)
            # ONNX Runtime's u8s8 products can saturate (its quantization guide); the export
            # cannot know the CPU of the line, and the tiny detector's outputs moved 6.5% of
            # their range there with 8 bits against 2.8% on an Intel Xeon
            reduce_range=True,
            nodes_to_exclude=_float_nodes(graph),
        )
    return target


def check_parity(
    reference,
    candidate,
    data: str,
    image_size: int,
    split: str,
    resize: str = "stretch",
    logits: bool = False,
) -> dict:
    """Top-1 agreement, max probability difference and both accuracies on one split."""
    agree = total = ref_correct = cand_correct = 0
    max_diff = 0.0
    dataset = create_dataset(data, split, image_size=image_size, batch_size=32, resize=resize)
    for images, labels in dataset:
        batch = images.numpy()
        expected, actual = reference.predict(batch), candidate.predict(batch)
        if logits:
            expected, actual = softmax(expected), softmax(actual)
        labels = labels.numpy()
        agree += int((expected.argmax(1) == actual.argmax(1)).sum())
        ref_correct += int((expected.argmax(1) == labels).sum())
        cand_correct += int((actual.argmax(1) == labels).sum())
        max_diff = max(max_diff, float(np.abs(expected - actual).max()))
        total += len(labels)
    return {
        "split": split,
        "num_images": total,
        "top1_agreement": agree / total,
        "max_probability_difference": max_diff,
        "keras_accuracy": ref_correct / total,
        "export_accuracy": cand_correct / total,
    }


def _relative(path: Path, folder: Path) -> str:
    return Path(os.path.relpath(path.resolve(), folder.resolve())).as_posix()


def _data_of_run(model_file: Path) -> str | None:
    config = run_folder_of(model_file) / "config.yaml"
    if config.is_file():
        return (yaml.safe_load(config.read_text()) or {}).get("data") or None
    return None


def is_export_folder(folder: Path) -> bool:
    """A folder an earlier ``export`` wrote: its metadata names an export format."""
    try:
        metadata = json.loads((folder / METADATA_NAME).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(metadata, dict) and metadata.get("format") in FORMATS


def check_export_folder(folder: Path, overwrite: bool = False) -> None:
    """Refuse, before any work, to replace a folder that holds something else than an export;
    a new folder is only made when the export succeeds."""
    if folder.exists() and not is_export_folder(folder):
        prepare_output_folder(folder, "an earlier export", overwrite=overwrite)


@contextlib.contextmanager
def _staged(folder: Path) -> Iterator[Path]:
    """A hidden staging folder beside ``folder``; on success it replaces ``folder``."""
    staging = folder.with_name(f".{folder.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _checked_parity(fmt: str, figures: dict, split: str) -> dict:
    """The parity figures, or ExportError when the export disagrees with the Keras model."""
    log.info(
        "%s parity on %d %s images: top-1 agreement %.4f, max probability difference %.2e, "
        "accuracy %.4f (keras %.4f)",
        fmt,
        figures["num_images"],
        split,
        figures["top1_agreement"],
        figures["max_probability_difference"],
        figures["export_accuracy"],
        figures["keras_accuracy"],
    )
    loss = figures["keras_accuracy"] - figures["export_accuracy"]
    if not fmt.endswith("int8") and figures["top1_agreement"] < 1.0:
        raise ExportError(f"{fmt}: top-1 agreement {figures['top1_agreement']:.4f} < 1.0")
    if fmt.endswith("int8") and loss > MAX_INT8_ACCURACY_LOSS:
        raise ExportError(f"{fmt}: int8 loses {loss:.2%} accuracy (limit 0.3 pp)")
    return {"parity": figures, "validation_accuracy": figures["export_accuracy"]}


def _write_artefact(fmt: str, keras_model, staging: Path, calibration) -> Path:
    base = fmt.removesuffix("-int8")
    if base == "savedmodel":
        return _write_savedmodel(keras_model, staging)
    if base == "tflite":
        return _write_tflite(keras_model, staging, calibration)
    return _write_onnx(keras_model, staging, calibration)


def export_model(
    model: str | Path,
    fmt: str,
    out: str | Path | None = None,
    data: str | Path | None = None,
    split: str = "validation",
    calibration_images: int = 400,
    parity: bool = True,
    overwrite: bool = False,
) -> dict:
    """Export a Keras run or ``.keras`` file to ``fmt`` in ``out`` (default RUN/export/FMT).

    Returns the export's metadata, plus ``export_dir`` (where it was written). A folder that
    holds something else than an earlier export is refused unless ``overwrite``.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"format must be one of {FORMATS}, got {fmt!r}")
    location = locate_model(model)
    if location.kind != "keras":
        raise ExportError(
            f"{model}: export starts from a Keras run or .keras file, not {location.kind}"
        )
    source = read_metadata(location)
    data = str(data) if data else _data_of_run(location.path)
    if (parity or fmt.endswith("int8")) and not data:
        raise ExportError(f"{model}: no --data given and none recorded in the run's config.yaml")
    folder = Path(out) if out else run_folder_of(location.path) / "export" / fmt
    check_export_folder(folder, overwrite)
    reference = KerasBackend(location.path, source)
    size = int(source["image_size"])
    reference.predict_outputs(np.zeros((1, size, size, 3), np.float32))  # exports need a call
    with tempfile.TemporaryDirectory(prefix="defectscope-export-") as scratch:
        if source.get("task") == "detect" and data:  # converted once for calibration and parity
            data = detector_records(data, Path(scratch))
        calibration = _calibration(source, data, calibration_images) if "int8" in fmt else None
        with _staged(folder) as staging:
            artefact = _write_artefact(fmt, reference.model, staging, calibration)
            metadata = {
                **source,
                "format": fmt,
                "file": artefact.name,
                # relative to the export folder, so that a copied run keeps its links
                "source_model": _relative(location.path, folder),
                "source_run": _relative(run_folder_of(location.path), folder),
            }
            if parity:
                metadata.update(_parity(reference, location, artefact, metadata, data, split))
            atomic_write_json(staging / METADATA_NAME, metadata)
    log.info("exported %s -> %s", fmt, folder)
    return {**json.loads((folder / METADATA_NAME).read_text()), "export_dir": str(folder)}


def _calibration(source: dict, data: str, count: int):
    """A function that yields the images which calibrate an int8 export."""
    size = int(source["image_size"])
    if source.get("task") == "detect":
        return lambda: detector_calibration(data, size, count)
    resize = source.get("resize", "stretch")
    return lambda: _calibration_batches(data, size, count, resize)


def _parity(reference, location, artefact: Path, metadata: dict, data: str, split: str) -> dict:
    """The export's parity figures against the Keras model; ExportError when they fail."""
    fmt = metadata["format"]
    if metadata.get("task") == "detect":
        return detector_parity(location, artefact, fmt, metadata, data, split)
    candidate = BACKENDS[fmt.removesuffix("-int8")](artefact, metadata)
    resize = metadata.get("resize", "stretch")
    logits = metadata.get("output") == "logits"
    size = int(metadata["image_size"])
    figures = check_parity(reference, candidate, data, size, split, resize, logits)
    return _checked_parity(fmt, figures, split)
