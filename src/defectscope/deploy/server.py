"""``defectscope serve``: a FastAPI service and a small web page around any loaded model.

``POST /predict`` takes a multipart upload (field ``file``) or the raw image bytes, and answers
``{label, confidence, probabilities, unknown, unknown_score, model, latency_ms}``, plus
``defect`` and ``defect_score`` for a model with an OK class (``?explain=1`` adds a Grad-CAM
overlay as a base64 PNG). Limits, each configurable (:class:`ServiceConfig`):

- uploads above ``max_upload_bytes`` get 413 as soon as the body passes the limit (nothing past
  it is buffered); images above ``max_pixels`` 415; non-images 415 with the reason;
- at most ``decode_slots`` images are decoded at once and one prediction runs at a time; when
  ``max_waiting`` requests already wait, the next gets 503 with ``Retry-After``;
- ``/health`` (GET and HEAD) never waits for the model;
- an optional API key (``X-API-Key`` or ``Authorization: Bearer``) for /predict and /metadata,
  allowed ``Host`` headers (DNS rebinding), and no cross-origin POST unless its origin is
  allowed (CORS is off by default);
- answers and /metadata name the model relative to its folder, never by absolute path.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from fastapi import Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import ClientDisconnect

from defectscope.core.memory import return_large_blocks_to_the_os, trim
from defectscope.core.version import __version__
from defectscope.data.images import ImageDecodeError
from defectscope.deploy.limits import BodyTooLarge, read_body, replay
from defectscope.inference.classifier import Classifier
from defectscope.inference.detector import Detector
from defectscope.inference.explain import overlay_png

DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_PIXELS = 32_000_000  # e.g. an 8192 x 3900 line-scan frame
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
log = logging.getLogger("defectscope.serve")


@dataclass
class ServiceConfig:
    """Limits and access rules of the service."""

    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    decode_slots: int = 1  # images decoded at once (memory: about 15 bytes per pixel each)
    max_waiting: int = 64  # requests waiting for a slot before 503
    api_key: str | None = None
    allowed_hosts: list[str] = field(default_factory=lambda: ["*"])
    cors_origins: list[str] = field(default_factory=list)


class Busy(Exception):
    """Too many requests already wait (answered 503)."""


class Predictor:
    """The model behind the service: bounded decoding, one prediction at a time, a queue."""

    def __init__(self, classifier: Classifier | Detector, config: ServiceConfig) -> None:
        self.classifier, self.config = classifier, config
        self.decode_slots = asyncio.Semaphore(config.decode_slots)
        self.model_slot = asyncio.Semaphore(1)
        self.waiting = 0

    async def _slot(self, semaphore: asyncio.Semaphore) -> None:
        if semaphore.locked() and self.waiting >= self.config.max_waiting:
            raise Busy
        self.waiting += 1
        try:
            await semaphore.acquire()
        finally:
            self.waiting -= 1

    async def predict(self, data: bytes, name: str, explain: bool) -> dict:
        started = time.perf_counter()
        await self._slot(self.decode_slots)
        try:
            image = await run_in_threadpool(self._decode, data, name)
        finally:
            self.decode_slots.release()
        await self._slot(self.model_slot)
        try:
            prediction, heatmap = await run_in_threadpool(self._predict, name, image, explain)
        finally:
            self.model_slot.release()
        answer = {
            "label": prediction.label,
            "confidence": prediction.confidence,
            "probabilities": dict(prediction.top_k),
            "unknown": prediction.unknown,
            "unknown_score": prediction.unknown_score,
            "model": model_summary(self.classifier),
        }
        if prediction.defect is not None:
            answer["defect"] = prediction.defect
            answer["defect_score"] = prediction.defect_score
        if heatmap is not None:
            answer["heatmap_png_base64"] = base64.b64encode(overlay_png(image, heatmap)).decode()
        answer["latency_ms"] = round(1000 * (time.perf_counter() - started), 2)
        return answer

    def _decode(self, data: bytes, name: str):
        try:
            return self.classifier.prepare_bytes(data, name, self.config.max_pixels)
        finally:
            trim()  # a large image's buffers go back to the system, not to the heap

    async def detect(self, data: bytes, name: str, confidence: float | None) -> dict:
        """A detector's answer: its boxes (pixels of the upload), counts per class."""
        started = time.perf_counter()
        await self._slot(self.decode_slots)
        try:
            image, original = await run_in_threadpool(self._decode, data, name)
        finally:
            self.decode_slots.release()
        await self._slot(self.model_slot)
        try:
            found = await run_in_threadpool(
                self.classifier.detect_image, name, image, original, confidence
            )
        finally:
            self.model_slot.release()
        best = max(found.boxes, key=lambda box: box.confidence, default=None)
        return {
            "boxes": [
                {
                    "label": b.label,
                    "confidence": b.confidence,
                    "box": [b.xmin, b.ymin, b.xmax, b.ymax],
                }
                for b in found.boxes
            ],
            "counts": found.counts(),
            "defects": len(found.boxes),
            "label": best.label if best else "",  # the image-level view: the surest box
            "confidence": best.confidence if best else 0.0,
            "width": found.width,
            "height": found.height,
            "model": model_summary(self.classifier),
            "latency_ms": round(1000 * (time.perf_counter() - started), 2),
        }

    def _predict(self, name: str, image, explain: bool):
        classes = self.classifier.classes
        prediction = self.classifier.predictions([name], image[None], top_k=len(classes))[0]
        prediction.top_k.sort(key=lambda pair: classes.index(pair[0]))  # in class order
        heatmap = self.classifier.explain(image[None])[0] if explain else None
        return prediction, heatmap


def model_summary(classifier: Classifier) -> dict:
    """The model as answers name it: its folder and file, never an absolute path."""
    path = Path(classifier.path)
    return {"name": f"{path.parent.name}/{path.name}", "backend": classifier.backend_name}


def public_metadata(classifier: Classifier) -> dict:
    """The model's metadata with every absolute path made relative to the model's folder."""
    folder = Path(classifier.path).parent
    public = {}
    for key, value in classifier.metadata.items():
        if isinstance(value, str) and os.path.isabs(value):
            value = os.path.relpath(value, folder)
        public[key] = value
    if isinstance(classifier, Detector):  # what the page asks for unless the user changes it
        public["box_confidence"] = classifier.box_confidence
    return {**public, "backend": classifier.backend_name, "model": model_summary(classifier)}


async def _upload(request: Request, limit: int) -> tuple[bytes, str]:
    """The image bytes of a multipart (field ``file``) or raw request, at most ``limit``."""
    body = await read_body(request, limit + 64 * 1024)  # room for the multipart envelope
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        if len(body) > limit:
            raise BodyTooLarge
        return body, "upload"
    form = await replay(request, body).form(max_files=1, max_fields=8)
    try:
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ValueError("multipart upload needs a file field named 'file'")
        data = await upload.read(limit + 1)
        if len(data) > limit:
            raise BodyTooLarge
        return data, Path(upload.filename or "upload").name
    finally:
        await form.close()


def _access_checks(config: ServiceConfig):
    """A dependency refusing requests without the API key (401) or from a foreign origin
    (403: a cross-origin POST would otherwise run the model even though the browser hides
    the answer)."""

    def check(request: Request) -> None:
        origin = request.headers.get("origin")
        own = f"{request.url.scheme}://{request.headers.get('host', '')}"
        if origin and origin != own and origin not in config.cors_origins:
            raise _Refused(403, f"origin {origin} is not allowed")
        if config.api_key is None:
            return
        given = request.headers.get("x-api-key") or ""
        bearer = request.headers.get("authorization", "")
        if bearer.lower().startswith("bearer "):
            given = given or bearer[7:]
        if not secrets.compare_digest(given.encode(), config.api_key.encode()):
            raise _Refused(401, "missing or wrong API key (X-API-Key header)")

    return check


class _Refused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def _application_shell(config: ServiceConfig) -> FastAPI:
    """The application with its host and CORS middleware, refusal handler and web page, before
    any route that needs the model."""
    app = FastAPI(
        title="defectscope",
        version=__version__,
        description="Surface-defect classification and detection. POST an image to /predict.",
    )
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=config.allowed_hosts)
    if config.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=config.cors_origins, allow_methods=["GET", "POST"]
        )

    @app.exception_handler(_Refused)
    async def refused(request: Request, err: _Refused) -> JSONResponse:
        return JSONResponse({"detail": err.detail}, status_code=err.status)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return (resources.files("defectscope") / "deploy" / "static" / "index.html").read_text()

    return app


def create_app(classifier: Classifier | Detector, config: ServiceConfig | None = None) -> FastAPI:
    """The FastAPI application serving ``classifier`` (any backend)."""
    config = config or ServiceConfig()
    return_large_blocks_to_the_os()
    predictor = Predictor(classifier, config)
    app = _application_shell(config)
    app.state.classifier, app.state.predictor = classifier, predictor
    guard = Depends(_access_checks(config))

    @app.head("/health", include_in_schema=False)
    @app.get("/health")
    async def health() -> dict:
        """Answered at once, whatever the model is doing."""
        return {
            "status": "ok",
            "backend": classifier.backend_name,
            "waiting": predictor.waiting,
            "api_key_required": config.api_key is not None,
        }

    @app.get("/metadata", dependencies=[guard])
    async def metadata() -> dict:
        return public_metadata(classifier)

    @app.post(
        "/predict",
        dependencies=[guard],
        responses={
            401: {"description": "API key required"},
            413: {"description": "upload too large"},
            415: {"description": "not a usable image"},
            503: {"description": "too many requests waiting; retry later"},
        },
    )
    async def predict(
        request: Request, explain: bool = False, conf: float | None = Query(None, ge=0.0, le=1.0)
    ) -> Response:
        """Classify one image (a detector: find its defect boxes at least ``conf`` confident,
        by default the confidence chosen when it was trained); multipart field ``file`` or the
        raw bytes as the body."""
        try:
            data, name = await _upload(request, config.max_upload_bytes)
            if isinstance(classifier, Detector):
                return JSONResponse(await predictor.detect(data, name, conf))
            return JSONResponse(await predictor.predict(data, name, explain))
        except BodyTooLarge:
            detail = f"upload larger than {config.max_upload_bytes} bytes"
            return JSONResponse({"detail": detail}, status_code=413)
        except ValueError as err:  # includes ImageDecodeError
            detail = f"{err.path}: {err.reason}" if isinstance(err, ImageDecodeError) else str(err)
            return JSONResponse({"detail": detail}, status_code=415)
        except Busy:
            detail = f"{config.max_waiting} requests are already waiting; retry later"
            return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": "2"})
        except ClientDisconnect:
            client = f"{request.client.host}:{request.client.port}" if request.client else "?"
            log.info("client %s disconnected before its upload was complete", client)
            return Response(status_code=400)

    return app
