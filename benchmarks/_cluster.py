"""Multi-worker training on one machine: ``TF_CONFIG`` for worker processes on loopback ports.

Used by ``distributed_training.py`` and by the tests (``tests/training/test_distribute.py``).
"""

from __future__ import annotations

import json
import socket


def local_tf_configs(workers: int) -> list[str]:
    """``TF_CONFIG`` values for ``workers`` worker processes on this machine (free loopback
    ports), for trying multi-worker training on one box; worker 0 is the chief."""
    sockets = [socket.socket() for _ in range(workers)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    addresses = [f"localhost:{sock.getsockname()[1]}" for sock in sockets]
    for sock in sockets:
        sock.close()
    return [
        json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": i}})
        for i in range(workers)
    ]
