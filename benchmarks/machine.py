"""The machine record every benchmark result carries (BENCHMARKS.md's header reads it)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    """The CPU's model name with its family and model numbers (``/proc/cpuinfo``; the platform's
    processor string elsewhere). Virtual machines may name different silicon alike ("AMD EPYC"); the
    numbers tell them apart (family 25 is Zen 3/4, 26 Zen 5), and their bf16 matrix speed differs."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "cpu family", "model") and key not in fields:
                    fields[key] = value.strip()
                if not line.strip() and fields:
                    break  # the first processor's block is enough
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or "unknown"
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name


def machine_info() -> dict[str, object]:
    """CPU count and model, its bf16 instructions, platform and Python version of this run.

    The hosts differ between runs (Intel with AMX, AMD EPYC with AVX512-BF16), and the bf16 paths
    (``MMRAG_TEXT_PRECISION`` / ``MMRAG_RERANK_PRECISION`` = auto) follow the CPU, so each result says
    which it ran on.
    """
    from mmrag.encoders.bf16 import bf16_hardware

    return {
        "cpus": os.cpu_count(),
        "cpu": cpu_model(),
        "bf16": bf16_hardware() or "none",
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def describe(machine: dict[str, Any]) -> str:
    """A result's machine record as one phrase for BENCHMARKS.md: CPUs, model and the bf16
    instructions (the bf16 rows depend on them)."""
    if "cpu" not in machine:
        return f"{machine.get('cpus', '?')} CPUs (model and bf16 instructions not recorded)"
    return f"{machine['cpus']} x {machine['cpu']} (bf16 instructions: {machine.get('bf16') or 'none'})"


def cpu_name(machine: dict[str, Any] | None) -> str:
    """The CPU a result ran on, for a title or a summary row ("an unrecorded CPU" in older records)."""
    return str((machine or {}).get("cpu") or "an unrecorded CPU")


def head_commit() -> str | None:
    """The repository's checked-out commit (``git rev-parse HEAD``), None outside a git checkout."""
    repo = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def run_record() -> dict[str, object]:
    """The header of a result file: the command that made it (this script and its arguments), when
    (UTC, minutes) and on what machine (:func:`machine_info`)."""
    script = Path(sys.argv[0]).name
    return {
        "command": " ".join(["python", f"benchmarks/{script}", *sys.argv[1:]]),
        "measured": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        "machine": machine_info(),
    }
