"""Progress a person can read: a tqdm bar on a terminal, periodic log lines in a log file."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator

from tqdm import tqdm

log = logging.getLogger("defectscope")
LOG_EVERY_SECONDS = 30.0


def on_terminal() -> bool:
    """Whether stderr is a terminal (a redrawn bar) or a file or pipe (lines)."""
    return sys.stderr.isatty()


class Progress:
    """Counts items of a known or unknown total. On a terminal a tqdm bar; otherwise a log line
    every ``every_seconds`` (and a last one), so a log file shows that work goes on."""

    def __init__(
        self,
        description: str,
        total: int | None = None,
        unit: str = "image",
        every_seconds: float = LOG_EVERY_SECONDS,
    ) -> None:
        self.description, self.total, self.unit = description, total, unit
        self.count, self.every = 0, every_seconds
        self.started = self.last = time.monotonic()
        self.bar = (
            tqdm(desc=description, total=total, unit=unit, leave=False) if (on_terminal()) else None
        )

    def update(self, count: int = 1) -> None:
        self.count += count
        if self.bar is not None:
            self.bar.update(count)
        elif time.monotonic() - self.last >= self.every:
            self.last = time.monotonic()
            self._log()

    def _log(self) -> None:
        rate = self.count / max(time.monotonic() - self.started, 1e-9)
        done = f"{self.count}/{self.total}" if self.total else str(self.count)
        log.info("%s: %s %ss (%.1f/s)", self.description, done, self.unit, rate)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.count and time.monotonic() - self.started >= self.every:
            self._log()


def progress(
    items: Iterable, description: str, total: int | None = None, unit: str = "image"
) -> Iterator:
    """``items``, counted by a :class:`Progress` (one per item)."""
    counter = Progress(description, total, unit)
    try:
        for item in items:
            yield item
            counter.update()
    finally:
        counter.close()
