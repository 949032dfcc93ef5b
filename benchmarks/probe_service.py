"""A bounded loopback probe of `defectscope serve`: slow clients, oversized and chunked uploads,
concurrent huge images, and /health under load. Prints one table.

    python benchmarks/probe_service.py --model RUN_OR_EXPORT [--clients 32]

Starts the service in its own process (default limits), then, one probe at a time:
- a client that connects and sends nothing, one that sends half its headers, one that sends
  half its body: seconds until the service closes each connection;
- an upload declaring 200 MiB, and a chunked upload that streams 200 MiB: status, and how many
  bytes the client got to send before the answer;
- after one warm-up request (the model builds its graph on its first call), ``--clients``
  concurrent uploads of the worst image the limits accept (a flat PNG of 31.9
  megapixels, a few hundred kB) and of a 300-byte JPEG claiming 7000 x 4500 pixels: statuses,
  the service's resident memory (idle, peak, 5 s after), and /health latency meanwhile.
"""

from __future__ import annotations

import argparse
import io
import os
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

SERVER_READY_S = 120


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def request(port: int, raw: bytes, timeout: float = 60) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
            if b"\r\n\r\n" in answer and b"Connection: close" not in answer:
                break
    return answer


def closed_after(port: int, raw: bytes, limit: float = 60) -> float:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(raw)
        sock.settimeout(limit)
        started = time.monotonic()
        try:
            while sock.recv(1024):
                pass
        except TimeoutError:
            return float("inf")
        return time.monotonic() - started


def streamed_upload(port: int, declared: int | None, total: int) -> tuple[str, int]:
    """Send up to ``total`` bytes of body, 64 KiB at a time, until the service answers: its
    status line and the bytes sent before it."""
    length = f"Content-Length: {declared}" if declared else "Transfer-Encoding: chunked"
    head = f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\n{length}\r\n\r\n".encode()
    chunk = b"\0" * 65536
    frame = chunk if declared else b"%x\r\n" % len(chunk) + chunk + b"\r\n"
    sent, answer = 0, b""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        while sent < total and not answer:
            if select.select([sock], [], [], 0)[0]:
                answer = sock.recv(4096)
                break
            try:
                sock.sendall(frame)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        sock.settimeout(10)
        try:
            while b"\r\n" not in answer and (part := sock.recv(4096)):
                answer += part
        except (TimeoutError, ConnectionResetError):
            pass
    return answer.split(b"\r\n")[0].decode(errors="replace"), sent


def worst_png(megapixels: float = 31.9) -> bytes:
    width = 8000
    height = int(megapixels * 1e6 / width)
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width), 127, np.uint8)).convert("RGB").save(buffer, "PNG")
    return buffer.getvalue()


def small_huge_jpeg() -> bytes:
    from tests.helpers import jpeg_claiming_size

    return jpeg_claiming_size(7000, 4500)


def post_image(port: int, data: bytes) -> str:
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    ).encode()
    return request(port, head + data, timeout=600).split(b"\r\n")[0].decode()


def burst(port: int, pid: int, data: bytes, clients: int) -> dict:
    """``clients`` concurrent uploads of ``data``; memory and /health latency meanwhile."""
    statuses, peak, health = [], rss_mb(pid), []
    idle = rss_mb(pid)
    threads = [
        threading.Thread(target=lambda: statuses.append(post_image(port, data)))
        for _ in range(clients)
    ]
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        peak = max(peak, rss_mb(pid))
        tic = time.perf_counter()
        request(port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        health.append(time.perf_counter() - tic)
        time.sleep(0.1)
    time.sleep(5)
    codes: dict[str, int] = {}
    for status in statuses:
        code = status.split(" ")[1] if " " in status else "?"
        codes[code] = codes.get(code, 0) + 1
    return {
        "statuses": codes,
        "idle_mb": idle,
        "peak_mb": peak,
        "after_mb": rss_mb(pid),
        "health_p50_ms": 1000 * float(np.median(health)) if health else float("nan"),
        "health_max_ms": 1000 * max(health) if health else float("nan"),
    }


def start_server(model: str, port: int) -> subprocess.Popen:
    args = [sys.executable, "-m", "defectscope", "serve", "--model", model, "--port", str(port)]
    server = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + SERVER_READY_S
    while time.monotonic() < deadline:
        try:
            if b"200 OK" in request(port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 2):
                return server
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise SystemExit("the service did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--clients", type=int, default=32)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.helpers
    port = free_port()
    server = start_server(args.model, port)
    rows = []
    try:
        warm = post_image(port, small_huge_jpeg())  # the model's first call builds its graph
        rows.append(("warm-up request", f"{warm}; RSS {rss_mb(server.pid):.0f} MB"))
        rows.append(("silent client", f"closed after {closed_after(port, b''):.1f} s"))
        half_headers = b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        rows.append(("half the headers", f"closed after {closed_after(port, half_headers):.1f} s"))
        half_body = b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\nx"
        rows.append(("half the body", f"closed after {closed_after(port, half_body):.1f} s"))
        for label, declared in (("declared 200 MiB", 200 << 20), ("chunked 200 MiB", None)):
            status, sent = streamed_upload(port, declared, 200 << 20)
            rows.append((label, f"{status!r} after {sent / 2**20:.1f} MiB sent"))
        png = worst_png()
        for label, data in (
            (f"{args.clients} x flat PNG 31.9 MP ({len(png) // 1024} kB)", png),
            (f"the same {args.clients} PNGs again (is the memory bounded?)", png),
            (f"{args.clients} x 300-byte JPEG claiming 7000x4500", small_huge_jpeg()),
        ):
            result = burst(port, server.pid, data, args.clients)
            rows.append(
                (
                    label,
                    f"{result['statuses']}; RSS idle {result['idle_mb']:.0f} MB, peak "
                    f"{result['peak_mb']:.0f} (+{result['peak_mb'] - result['idle_mb']:.0f}), "
                    f"5 s after {result['after_mb']:.0f}; /health p50 "
                    f"{result['health_p50_ms']:.0f} ms, max {result['health_max_ms']:.0f} ms",
                )
            )
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"\ncores: {os.cpu_count()}; model {args.model}")
    width = max(len(r[0]) for r in rows)
    for probe, outcome in rows:
        print(f"{probe:<{width}}  {outcome}")


if __name__ == "__main__":
    main()
