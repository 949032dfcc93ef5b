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

import numpy as np
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse

from defectscope import __version__
from defectscope.data.images import ImageDecodeError, canonical_image

DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024


class UploadTooLarge(Exception):
    pass


class Predictor:
    """The model behind the service: one request at a time, Grad-CAM built on first use."""

    def __init__(self, classifier) -> None:
        self.classifier = classifier
        self._lock = threading.Lock()
        self._gradcam = None

    def _explainer(self):
        from defectscope.deploy.gradcam import GradCam, keras_model_for

        if self._gradcam is None:
            self._gradcam = GradCam(keras_model_for(self.classifier))
        return self._gradcam

    def predict(self, data: bytes, name: str, explain: bool) -> dict:
        from defectscope.data.pipeline import preprocess_encoded

        started = time.perf_counter()
        encoded = canonical_image(data, name=name).encoded
        image = preprocess_encoded(encoded, self.classifier.image_size).numpy()[None]
        with self._lock:
            probabilities = self.classifier.predict_images(image)[0]
            heatmap = self._explainer().heatmaps(image)[0][0] if explain else None
        best = int(np.argmax(probabilities))
        answer = {
            "label": self.classifier.classes[best],
            "confidence": float(probabilities[best]),
            "probabilities": {
                name: float(p)
                for name, p in zip(self.classifier.classes, probabilities, strict=True)
            },
            "model": {"path": str(self.classifier.path), "backend": self.classifier.backend_name},
        }
        if heatmap is not None:
            from defectscope.deploy.gradcam import overlay_png

            answer["heatmap_png_base64"] = base64.b64encode(overlay_png(image[0], heatmap)).decode()
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
