"""Limits uvicorn and Starlette do not set on their own: read deadlines and a streamed body cap.

uvicorn times out idle keep-alive connections, but not a client that sends part of its headers or
part of its body and then waits (a "slowloris"). :class:`GuardedH11Protocol` adds two deadlines:
the request line and headers must arrive within ``header_timeout`` seconds, and while a body is
being received no more than ``body_timeout`` seconds may pass without a byte. A late client's
connection is closed. :func:`read_body` reads a request body up to a limit, so nothing past the
limit is ever buffered or written to disk.
"""

from __future__ import annotations

import asyncio
import logging

import h11
from starlette.requests import Request
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("defectscope.serve")


class BodyTooLarge(Exception):
    """A request body above the limit (answered 413)."""


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with header and body read deadlines (class attributes; make a
    subclass with :func:`guarded_protocol`)."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        self._arm(self.header_timeout, "headers")

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        state = self.conn.their_state
        if state is h11.SEND_BODY:  # every byte of a body restarts its clock
            self._arm(self.body_timeout, "body")
        elif state is h11.IDLE and self._deadline is None:  # the first bytes of a request
            self._arm(self.header_timeout, "headers")
        elif state is not h11.IDLE:
            self._disarm()  # the whole request is in; the application is working on it

    def on_response_complete(self) -> None:
        self._disarm()  # from here uvicorn's keep-alive timeout applies
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expire, what, seconds)

    def _disarm(self) -> None:
        if getattr(self, "_deadline", None) is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self, what: str, seconds: float) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            client = ":".join(map(str, self.client)) if self.client else "a client"
            log.info(
                "%s sent no complete %s within %.0f s; connection closed", client, what, seconds
            )
            self.transport.close()


def guarded_protocol(header_timeout: float, body_timeout: float) -> type[GuardedH11Protocol]:
    """A :class:`GuardedH11Protocol` with these deadlines, for ``uvicorn.Config(http=...)``."""
    return type(
        "GuardedH11Protocol",
        (GuardedH11Protocol,),
        {"header_timeout": header_timeout, "body_timeout": body_timeout},
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, read as it streams in; :class:`BodyTooLarge` as soon as it passes
    ``limit`` bytes (a declared Content-Length above it is refused before reading)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def replay(request: Request, body: bytes) -> Request:
    """A request that reads ``body`` (already received) instead of the socket."""
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(request.scope, receive)
