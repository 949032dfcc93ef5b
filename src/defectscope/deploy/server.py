"""``defectscope serve``: a FastAPI service and a small web page around any loaded model.

``POST /predict`` takes a multipart upload (field ``file``) or the raw image bytes, and answers
``{label, confidence, probabilities, model, latency_ms}`` (``?explain=1`` adds a Grad-CAM overlay
as a base64 PNG). Uploads above the size limit get 413, non-images 415. Requests are queued on
one lock around the model, so concurrent clients wait instead of failing.
"""

from __future__ import annotations

import base64
import threading
import time
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse

from defectscope.core.version import __version__
from defectscope.data.images import ImageDecodeError
from defectscope.inference.classifier import Classifier
from defectscope.inference.explain import overlay_png

DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024


class UploadTooLarge(Exception):
    pass


class Predictor:
    """The model behind the service: one prediction at a time, decoding outside the lock."""

    def __init__(self, classifier: Classifier) -> None:
        self.classifier = classifier
        self._lock = threading.Lock()

    def predict(self, data: bytes, name: str, explain: bool) -> dict:
        started = time.perf_counter()
        image = self.classifier.prepare_bytes(data, name)
        classes = self.classifier.classes
        with self._lock:
            prediction = self.classifier.predictions([name], image[None], top_k=len(classes))[0]
            heatmap = self.classifier.explain(image[None])[0] if explain else None
        answer = {
            "label": prediction.label,
            "confidence": prediction.confidence,
            "probabilities": {name: dict(prediction.top_k)[name] for name in classes},
            "model": {"path": str(self.classifier.path), "backend": self.classifier.backend_name},
        }
        if heatmap is not None:
            answer["heatmap_png_base64"] = base64.b64encode(overlay_png(image, heatmap)).decode()
        answer["latency_ms"] = round(1000 * (time.perf_counter() - started), 2)
        return answer


async def _read_upload(request, limit: int) -> tuple[bytes, str]:
    """The image bytes of a multipart (field ``file``) or raw request, at most ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise UploadTooLarge
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=8)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ValueError("multipart upload needs a file field named 'file'")
        data = await upload.read(limit + 1)
        name = upload.filename or "upload"
        await form.close()
    else:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise UploadTooLarge
            chunks.append(chunk)
        data, name = b"".join(chunks), "upload"
    if len(data) > limit:
        raise UploadTooLarge
    return data, name


def create_app(classifier, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES):
    """The FastAPI application serving ``classifier`` (any backend)."""
    predictor = Predictor(classifier)
    app = FastAPI(
        title="defectscope",
        version=__version__,
        description="Surface-defect classification. POST an image to /predict.",
    )

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return (resources.files("defectscope") / "deploy" / "static" / "index.html").read_text()

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "backend": classifier.backend_name}

    @app.get("/metadata")
    def metadata() -> dict:
        return {
            **classifier.metadata,
            "backend": classifier.backend_name,
            "path": str(classifier.path),
        }

    @app.post(
        "/predict",
        responses={413: {"description": "upload too large"}, 415: {"description": "not an image"}},
    )
    async def predict(request: Request, explain: bool = False) -> JSONResponse:
        """Classify one image: multipart field ``file`` or the raw bytes as the body."""
        try:
            data, name = await _read_upload(request, max_upload_bytes)
        except UploadTooLarge:
            return JSONResponse(
                {"detail": f"upload larger than {max_upload_bytes} bytes"}, status_code=413
            )
        except ValueError as err:
            return JSONResponse({"detail": str(err)}, status_code=415)
        try:
            answer = await run_in_threadpool(predictor.predict, data, name, explain)
        except ImageDecodeError as err:
            return JSONResponse({"detail": f"{err.path}: {err.reason}"}, status_code=415)
        return JSONResponse(answer)

    return app
