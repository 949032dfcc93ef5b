"""core.memory: cyclic garbage is collected while a block runs, not only when it ends."""

from __future__ import annotations

import gc
import time
import weakref

import pytest

from defectscope.core.memory import collecting_garbage


class Node:
    def __init__(self) -> None:
        self.partner: Node | None = None


def _cycle() -> weakref.ref:
    first, second = Node(), Node()
    first.partner, second.partner = second, first
    return weakref.ref(first)


def test_cycles_made_inside_the_block_are_collected_before_it_ends() -> None:
    gc.disable()  # only the collector may free the cycle
    try:
        with collecting_garbage(every_seconds=0.05):
            alive = _cycle()
            deadline = time.monotonic() + 5
            while alive() is not None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert alive() is None
        assert alive() is None
    finally:
        gc.enable()


def test_without_the_block_the_cycle_waits_for_a_collection() -> None:
    gc.disable()
    try:
        alive = _cycle()
        time.sleep(0.1)
        assert alive() is not None
        with collecting_garbage(every_seconds=60):  # the collection on leaving frees it
            pass
        assert alive() is None
    finally:
        gc.enable()


def test_a_bad_interval_repeats_the_value() -> None:
    with pytest.raises(ValueError, match="-1"), collecting_garbage(every_seconds=-1):
        pass
