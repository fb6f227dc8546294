"""Waiting for a state in threaded tests (not a timing assertion: the bound only turns a hang into
a failure)."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(cond: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    """Return once ``cond()`` holds; fail naming ``what`` if it never does within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"never reached: {what}")
        time.sleep(0.005)
