"""Exact round trip of every feature through tf.train.Example."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from defectscope.data import tfrecord_features as keys
from defectscope.data.layout import Sample
from defectscope.data.records import load_record
from defectscope.data.tfrecord_features import build_example, example_to_record

XML = """<annotation><filename>plate_7.png</filename>
<size><width>256</width><height>256</height><depth>1</depth></size>
<object><name>scratches</name><truncated>1</truncated><difficult>1</difficult>
<bndbox><xmin>64</xmin><ymin>32</ymin><xmax>192</xmax><ymax>128</ymax></bndbox></object>
<object><name>rust</name>
<bndbox><xmin>0</xmin><ymin>0</ymin><xmax>256</xmax><ymax>256</ymax></bndbox></object>
</annotation>"""


def make_sample(tmp_path) -> Sample:
    image_path = tmp_path / "images" / "scratches" / "plate_7.png"
    image_path.parent.mkdir(parents=True)
    pixels = np.random.default_rng(0).integers(0, 256, (256, 256), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    image_path.write_bytes(buffer.getvalue())
    xml_path = tmp_path / "plate_7.xml"
    xml_path.write_text(XML)
    return Sample("train", "scratches", image_path, xml_path, "train/images/scratches/plate_7.png")


def test_record_round_trips_exactly(tmp_path) -> None:
    sample = make_sample(tmp_path)
    record, problems = load_record(sample, {"crazing": 0, "scratches": 1})
    assert [p.kind for p in problems] == ["class_mismatch"]  # the "rust" object
    serialized = build_example(record).SerializeToString()
    back = example_to_record(serialized)
    assert back == record
    assert back.encoded == sample.image_path.read_bytes()  # 8-bit grey PNG stored as is
    assert (back.format, back.width, back.height) == ("png", 256, 256)
    assert (back.class_label, back.class_text) == (1, "scratches")
    scratch, rust = back.boxes
    assert (scratch.xmin, scratch.ymin, scratch.xmax, scratch.ymax) == (0.25, 0.125, 0.75, 0.5)
    assert (scratch.class_label, scratch.difficult, scratch.truncated) == (1, True, True)
    assert (rust.class_text, rust.class_label) == ("rust", -1)
    assert (rust.xmin, rust.xmax) == (0.0, 1.0)


def test_feature_keys_are_the_object_detection_api_names(tmp_path) -> None:
    record, _ = load_record(make_sample(tmp_path), {"scratches": 0})
    example = build_example(record)
    features = example.features.feature
    assert set(features) == {
        "image/encoded",
        "image/format",
        "image/height",
        "image/width",
        "image/filename",
        "image/source_id",
        "image/key/sha256",
        "image/class/label",
        "image/class/text",
        "image/object/bbox/xmin",
        "image/object/bbox/ymin",
        "image/object/bbox/xmax",
        "image/object/bbox/ymax",
        "image/object/class/text",
        "image/object/class/label",
        "image/object/difficult",
        "image/object/truncated",
    }
    assert features[keys.IMAGE_KEY_SHA256].bytes_list.value[0].decode() == record.sha256
    assert features[keys.IMAGE_FILENAME].bytes_list.value[0] == b"plate_7.png"
    assert list(features[keys.OBJECT_BBOX_XMIN].float_list.value) == [0.25, 0.0]
