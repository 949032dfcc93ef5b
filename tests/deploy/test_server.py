"""The HTTP API through FastAPI's test client, and the read deadlines on a real socket."""

from __future__ import annotations

import asyncio
import base64
import io
import socket
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from starlette.requests import Request

from defectscope.deploy.limits import BodyTooLarge, guarded_protocol, read_body
from defectscope.deploy.server import Busy, Predictor, ServiceConfig, create_app
from defectscope.inference.classifier import load_model
from tests.helpers import jpeg_claiming_size, pngs_pillow_accepts_and_tensorflow_refuses

LIMITS = ServiceConfig(max_upload_bytes=200_000, max_pixels=1_000_000)


@pytest.fixture(scope="module")
def classifier(tiny_run: Path):
    return load_model(tiny_run)


@pytest.fixture(scope="module")
def client(classifier) -> TestClient:
    return TestClient(create_app(classifier, LIMITS))


@pytest.fixture(scope="module")
def jpeg(synthetic_root: Path) -> bytes:
    return next((synthetic_root / "validation/images/scratches").glob("*.jpg")).read_bytes()


def test_multipart_and_raw_uploads_agree(client: TestClient, jpeg: bytes) -> None:
    multipart = client.post("/predict", files={"file": ("a.jpg", jpeg, "image/jpeg")})
    raw = client.post("/predict", content=jpeg, headers={"content-type": "image/jpeg"})
    assert multipart.status_code == raw.status_code == 200
    first, second = multipart.json(), raw.json()
    assert first["label"] == second["label"]
    assert set(first) == {
        "label",
        "confidence",
        "probabilities",
        "unknown",
        "unknown_score",
        "model",
        "latency_ms",
    }  # no "defect": the synthetic classes have no OK class
    assert next(iter(first["probabilities"])) == "crazing"  # class order
    assert abs(sum(first["probabilities"].values()) - 1.0) < 1e-4
    assert first["confidence"] == max(first["probabilities"].values())
    assert first["model"] == {"name": "weights/best.keras", "backend": "keras"}


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


@pytest.mark.parametrize("name", sorted(pngs_pillow_accepts_and_tensorflow_refuses()))
def test_corrupt_pngs_get_415_with_the_reason(client: TestClient, name: str) -> None:
    data = pngs_pillow_accepts_and_tensorflow_refuses()[name]
    answer = client.post("/predict", files={"file": (f"{name}.png", data, "image/png")})
    assert answer.status_code == 415, answer.text
    assert answer.json()["detail"].startswith(f"{name}.png: corrupt or truncated image")


def test_huge_claimed_sizes_are_decoded_small_or_refused(client: TestClient) -> None:
    # 7000 x 4500 (31.5 megapixels) is within the default limit but not this 1-megapixel one
    refused = client.post("/predict", content=jpeg_claiming_size(7000, 4500))
    assert refused.status_code == 415 and "exceeds the limit of 1000000" in refused.text
    roomy = TestClient(create_app(client.app.state.classifier, ServiceConfig()))
    answer = roomy.post("/predict", content=jpeg_claiming_size(7000, 4500))
    assert answer.status_code == 200  # decoded at 1/8 scale (875 x 562), not at full size


def test_chunked_upload_is_refused_while_it_streams() -> None:
    pulled = []

    async def receive() -> dict:  # a chunked body of 100 MB, as the socket would give it
        pulled.append(1)
        return {"type": "http.request", "body": b"\0" * 100_000, "more_body": len(pulled) < 1000}

    scope = {"type": "http", "method": "POST", "headers": [], "path": "/predict"}

    async def read() -> None:
        await read_body(Request(scope, receive), 200_000)

    with pytest.raises(BodyTooLarge):
        asyncio.run(read())
    assert len(pulled) == 3  # stopped at the limit: 300 kB pulled, not 100 MB


def test_health_answers_head_and_exposes_no_paths(client: TestClient, tiny_run: Path) -> None:
    assert client.get("/health").json()["status"] == "ok"
    assert client.head("/health").status_code == 200
    metadata = client.get("/metadata").json()
    assert metadata["image_size"] == 71 and len(metadata["classes"]) == 6
    assert str(tiny_run) not in str(metadata) and "/tmp" not in str(metadata)
    page = client.get("/")
    assert page.status_code == 200 and "Choose or drop an image" in page.text
    assert client.get("/docs").status_code == 200
    assert "/predict" in client.get("/openapi.json").json()["paths"]


def test_api_key_hosts_and_origins(classifier, jpeg: bytes) -> None:
    config = ServiceConfig(api_key="s3cret", allowed_hosts=["testserver"])
    guarded = TestClient(create_app(classifier, config))
    assert guarded.post("/predict", content=jpeg).status_code == 401
    assert guarded.get("/metadata").status_code == 401
    ok = guarded.post("/predict", content=jpeg, headers={"X-API-Key": "s3cret"})
    assert ok.status_code == 200
    bearer = guarded.get("/metadata", headers={"Authorization": "Bearer s3cret"})
    assert bearer.status_code == 200
    assert guarded.get("/health").json()["api_key_required"] is True  # health stays open
    rebinding = guarded.get("/health", headers={"Host": "evil.example"})
    assert rebinding.status_code == 400
    foreign = {"X-API-Key": "s3cret", "Origin": "http://evil.example"}
    assert guarded.post("/predict", content=jpeg, headers=foreign).status_code == 403
    same = {"X-API-Key": "s3cret", "Origin": "http://testserver"}
    assert guarded.post("/predict", content=jpeg, headers=same).status_code == 200


def test_a_full_queue_answers_busy(classifier) -> None:
    predictor = Predictor(classifier, ServiceConfig(max_waiting=1))

    async def scenario() -> list[str]:
        await predictor.model_slot.acquire()  # a prediction is running
        first = asyncio.create_task(predictor._slot(predictor.model_slot))  # waits
        await asyncio.sleep(0.01)
        outcome = []
        try:
            await predictor._slot(predictor.model_slot)
        except Busy:
            outcome.append("busy")
        predictor.model_slot.release()
        await first
        outcome.append("first served")
        return outcome

    assert asyncio.run(scenario()) == ["busy", "first served"]


def _serve(app, port: int):
    import uvicorn

    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", http=guarded_protocol(0.5, 0.5)
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return server, thread


def _closed_after(sock: socket.socket, limit: float) -> float:
    """Seconds until the server closes ``sock`` (fails after ``limit``)."""
    sock.settimeout(limit)
    started = time.monotonic()
    while sock.recv(1024):
        pass
    return time.monotonic() - started


@pytest.mark.slow
def test_slow_clients_are_cut_off(classifier) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server, thread = _serve(create_app(classifier, LIMITS), port)
    try:
        with socket.create_connection(("127.0.0.1", port)) as silent:
            assert _closed_after(silent, 5) < 2
        with socket.create_connection(("127.0.0.1", port)) as partial_headers:
            partial_headers.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            assert _closed_after(partial_headers, 5) < 2
        with socket.create_connection(("127.0.0.1", port)) as partial_body:
            partial_body.sendall(
                b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n"
                + b"x" * 10
            )
            assert _closed_after(partial_body, 5) < 2
        with socket.create_connection(("127.0.0.1", port)) as healthy:
            healthy.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert b"200 OK" in healthy.recv(4096)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_a_client_that_disconnects_mid_upload_is_one_log_line(classifier, caplog) -> None:
    app = create_app(classifier, LIMITS)
    messages = [
        {"type": "http.request", "body": b"\xff\xd8partial", "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "path": "/predict",
        "raw_path": b"/predict",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"content-type", b"image/jpeg")],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
        "scheme": "http",
        "root_path": "",
    }
    with caplog.at_level("INFO", logger="defectscope.serve"):
        asyncio.run(app(scope, receive, send))
    assert [r.getMessage() for r in caplog.records] == [
        "client 127.0.0.1:5000 disconnected before its upload was complete"
    ]
    assert not any(r.exc_info for r in caplog.records)
