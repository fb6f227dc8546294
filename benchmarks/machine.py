"""The machine record every benchmark result carries (BENCHMARKS.md's header reads it)."""

from __future__ import annotations

import os
import platform


def machine_info() -> dict[str, object]:
    """CPU count, platform and Python version of this run."""
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
