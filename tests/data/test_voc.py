"""VOC parsing: fields, quirks, unsafe XML refused, boxes clipped and reported."""

from __future__ import annotations

import pytest

from defectscope.data.voc import VocError, VocObject, clip_object, parse_voc

NEU_STYLE = """<annotation>
  <folder>cr</folder>
  <filename>crazing_1</filename>
  <size><width>200</width><height>200</height><depth>1</depth></size>
  <object><name>crazing</name><truncated>1</truncated><difficult>0</difficult>
    <bndbox><xmin>2</xmin><ymin>2</ymin><xmax>193</xmax><ymax>194</ymax></bndbox></object>
  <object><name>patches</name><difficult>1</difficult>
    <bndbox><xmin>10.5</xmin><ymin>20</ymin><xmax>30</xmax><ymax>40</ymax></bndbox></object>
</annotation>"""


def test_parses_size_objects_and_flags() -> None:
    annotation = parse_voc(NEU_STYLE, name="crazing_1.xml")
    assert (annotation.filename, annotation.width, annotation.height, annotation.depth) == (
        "crazing_1",
        200,
        200,
        1,
    )
    assert annotation.objects == (
        VocObject("crazing", 2, 2, 193, 194, difficult=False, truncated=True),
        VocObject("patches", 10.5, 20, 30, 40, difficult=True, truncated=False),
    )


def test_annotation_without_objects_is_valid() -> None:
    annotation = parse_voc(
        "<annotation><size><width>8</width><height>8</height></size></annotation>"
    )
    assert annotation.objects == ()
    assert annotation.width == 8


def test_unreadable_object_is_dropped_with_a_warning() -> None:
    xml = NEU_STYLE.replace("<xmin>2</xmin>", "<xmin>two</xmin>")
    annotation = parse_voc(xml, name="a.xml")
    assert [o.name for o in annotation.objects] == ["patches"]
    assert "is not a number: 'two'" in annotation.warnings[0]


XXE = """<?xml version="1.0"?>
<!DOCTYPE annotation [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<annotation><filename>&xxe;</filename></annotation>"""

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<annotation><filename>&lol3;</filename></annotation>"""


@pytest.mark.parametrize("xml", [XXE, BILLION_LAUGHS], ids=["xxe", "entity-expansion"])
def test_entities_are_refused(xml: str) -> None:
    with pytest.raises(VocError, match="refused unsafe XML") as caught:
        parse_voc(xml, name="evil.xml")
    assert caught.value.path == "evil.xml"


@pytest.mark.parametrize(
    ("xml", "reason"),
    [
        ("<annotation><size>", "not well-formed XML"),
        ("<svg></svg>", "expected <annotation>"),
        ("", "not well-formed XML"),
    ],
)
def test_malformed_files_are_refused(xml: str, reason: str) -> None:
    with pytest.raises(VocError, match=reason):
        parse_voc(xml, name="bad.xml")


def test_box_inside_is_unchanged() -> None:
    obj = VocObject("crazing", 2, 2, 193, 194)
    assert clip_object(obj, 200, 200) == (obj, [])


def test_box_out_of_bounds_is_clipped_and_reported() -> None:
    clipped, notes = clip_object(VocObject("scratches", -5, 10, 230, 50), 200, 200)
    assert (clipped.xmin, clipped.ymin, clipped.xmax, clipped.ymax) == (0, 10, 200, 50)
    assert "out of the 200x200 image, clipped" in notes[0]


def test_inverted_box_is_corrected_and_reported() -> None:
    clipped, notes = clip_object(VocObject("inclusion", 50, 60, 10, 20), 200, 200)
    assert (clipped.xmin, clipped.ymin, clipped.xmax, clipped.ymax) == (10, 20, 50, 60)
    assert notes[0].startswith("inverted box")


def test_box_entirely_outside_is_dropped() -> None:
    clipped, notes = clip_object(VocObject("patches", 300, 300, 400, 400), 200, 200)
    assert clipped is None
    assert "dropped" in notes[-1]
