"""Waiting for a state in threaded tests (not a timing assertion: the bound only turns a hang into
a failure)."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(cond: Callable[[], bool], what: str) -> None:
    """Return once ``cond()`` holds; fail naming ``what`` if it never does within 60 s."""
    deadline = time.monotonic() + 60
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"never reached: {what}")
        time.sleep(0.005)
