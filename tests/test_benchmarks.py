"""Smoke run of the benchmark scripts (seconds of work, not a measurement) so they cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_query_benchmark_smoke(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "results" / "query.json"
    env = {"MMRAG_DATA": str(data_dir), "PATH": "/usr/bin:/bin"}
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "bench_query.py"),
        "--points",
        "400",
        "--docs",
        "150",
        "--queries",
        "5",
        "--repeats",
        "1",
        "--out",
        str(out),
    ]
    subprocess.run(cmd, check=True, capture_output=True, env=env, timeout=600)
    result = json.loads(out.read_text())
    assert result["points"] == 400 and result["real_points"] == 150
    assert result["median_of_runs_ms"]["total_p95"] > 0 and result["search_peak_rss_mb"] > 100
    assert 0 <= result["median_of_runs_ms"]["recall@10"] <= 1
    md = tmp_path / "BENCHMARKS.md"
    subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "report.py"),
            "--results",
            str(out.parent),
            "--output",
            str(md),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert "p95 total / 50 ms limit" in md.read_text()


@pytest.mark.slow
def test_train_sweep_smoke(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "results" / "train_sweep.json"
    env = {"MMRAG_DATA": str(data_dir), "PATH": "/usr/bin:/bin"}
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "train_sweep.py"),
        "--limit",
        "30",
        "--epochs",
        "2",
        "--only",
        "4",
        "6",
        "--cache",
        str(tmp_path / "cache"),
        "--out",
        str(out),
    ]
    subprocess.run(cmd, check=True, capture_output=True, env=env, timeout=600)
    result = json.loads(out.read_text())
    assert result["base"] == "lite" and [r["loss"] for r in result["runs"]] == ["triplet", "infonce"]
    assert all(0 <= r["t2i_recall@10"] <= 1 for r in result["runs"])
    md = tmp_path / "BENCHMARKS.md"
    subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "report.py"),
            "--results",
            str(out.parent),
            "--output",
            str(md),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert "Triplet head training" in md.read_text()
