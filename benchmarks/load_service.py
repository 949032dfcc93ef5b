"""Load test of `defectscope serve` on loopback: concurrent clients, good and bad uploads.

    python benchmarks/load_service.py --model runs/neu [--clients 32] [--seconds 30] [--images DIR]

Starts the service in a subprocess on 127.0.0.1, runs the clients for a bounded time (every
fifth upload is not an image, every tenth is over the size limit), then prints status counts,
request latency percentiles and the server's resident memory before and after.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--images", type=Path, help="folder of good images (default: synthetic)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--max-upload-mb", type=float, default=1.0)
    args = parser.parse_args()
    if args.images:
        good = [p.read_bytes() for p in sorted(args.images.rglob("*.jpg"))[:50]]
    else:
        import io

        import numpy as np

        from defectscope.data.neu import NEU_CLASSES
        from defectscope.data.synthetic import draw_sample

        rng, good = np.random.default_rng(0), []
        for name in NEU_CLASSES:
            buffer = io.BytesIO()
            draw_sample(name, rng)[0].convert("RGB").save(buffer, "JPEG")
            good.append(buffer.getvalue())
    too_big = b"\xff\xd8" + b"\0" * int(args.max_upload_mb * 1024 * 1024 + 10)
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "defectscope",
            "serve",
            "--model",
            args.model,
            "--port",
            str(port),
            "--max-upload-mb",
            str(args.max_upload_mb),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("server did not start")
            time.sleep(0.5)
        httpx.post(base + "/predict", content=good[0], timeout=60)  # warm-up
        memory_before = rss_mb(server.pid)
        statuses: Counter[int] = Counter()
        latencies: list[float] = []
        lock = threading.Lock()
        stop_at = time.monotonic() + args.seconds

        def client(index: int) -> None:
            with httpx.Client(base_url=base, timeout=120) as session:
                n = index
                while time.monotonic() < stop_at:
                    n += 1
                    body = (
                        too_big
                        if n % 10 == 0
                        else b"not an image"
                        if n % 5 == 0
                        else good[n % len(good)]
                    )
                    tic = time.perf_counter()
                    status = session.post("/predict", content=body).status_code
                    with lock:
                        statuses[status] += 1
                        latencies.append(time.perf_counter() - tic)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        memory_after = rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    quantiles = statistics.quantiles(latencies, n=100)
    print(f"\n{args.clients} clients for {elapsed:.0f} s against {args.model}")
    rate = len(latencies) / elapsed
    print(f"requests {len(latencies)} ({rate:.1f}/s), statuses {dict(sorted(statuses.items()))}")
    print(f"latency p50 {1000 * quantiles[49]:.0f} ms, p99 {1000 * quantiles[98]:.0f} ms")
    print(f"server memory {memory_before:.0f} MB -> {memory_after:.0f} MB")
    print(f"5xx responses: {sum(n for s, n in statuses.items() if s >= 500)}")


if __name__ == "__main__":
    main()
