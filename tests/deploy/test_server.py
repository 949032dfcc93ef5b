"""The HTTP API through FastAPI's test client."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from defectscope.deploy.server import create_app
from defectscope.inference.classifier import load_model


@pytest.fixture(scope="module")
def client(tiny_run: Path) -> TestClient:
    return TestClient(create_app(load_model(tiny_run), max_upload_bytes=200_000))


@pytest.fixture(scope="module")
def jpeg(synthetic_root: Path) -> bytes:
    return next((synthetic_root / "validation/images/scratches").glob("*.jpg")).read_bytes()


def test_multipart_and_raw_uploads_agree(client: TestClient, jpeg: bytes) -> None:
    multipart = client.post("/predict", files={"file": ("a.jpg", jpeg, "image/jpeg")})
    raw = client.post("/predict", content=jpeg, headers={"content-type": "image/jpeg"})
    assert multipart.status_code == raw.status_code == 200
    first, second = multipart.json(), raw.json()
    assert first["label"] == second["label"]
    assert set(first) == {"label", "confidence", "probabilities", "model", "latency_ms"}
    assert abs(sum(first["probabilities"].values()) - 1.0) < 1e-4
    assert first["confidence"] == max(first["probabilities"].values())
    assert first["model"]["backend"] == "keras"


def test_explain_adds_a_heatmap(client: TestClient, jpeg: bytes) -> None:
    answer = client.post("/predict?explain=1", content=jpeg).json()
    heatmap = Image.open(io.BytesIO(base64.b64decode(answer["heatmap_png_base64"])))
    assert heatmap.size == (71, 71)


def test_bad_uploads(client: TestClient) -> None:
    too_big = client.post("/predict", content=b"\0" * 300_000)
    assert too_big.status_code == 413
    text = client.post("/predict", files={"file": ("notes.txt", b"hello", "text/plain")})
    assert text.status_code == 415
    assert "notes.txt: not a readable image" in text.json()["detail"]
    empty = client.post("/predict", content=b"")
    assert empty.status_code == 415 and "empty file" in empty.json()["detail"]
    no_file = client.post("/predict", data={"other": "x"}, files={"f": ("a", b"1")})
    assert no_file.status_code == 415


def test_health_metadata_page_and_docs(client: TestClient) -> None:
    assert client.get("/health").json()["status"] == "ok"
    metadata = client.get("/metadata").json()
    assert metadata["image_size"] == 71 and len(metadata["classes"]) == 6
    page = client.get("/")
    assert page.status_code == 200 and "Choose or drop an image" in page.text
    assert client.get("/docs").status_code == 200
    assert "/predict" in client.get("/openapi.json").json()["paths"]
