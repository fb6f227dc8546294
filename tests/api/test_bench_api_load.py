"""Smoke run of benchmarks/bench_api_load.py (a few seconds of load, not a measurement) so it cannot rot."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_benchmarks import _report, _script


@pytest.mark.slow
def test_api_load_benchmark_smoke(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "results" / "api_load.json"
    args = ["--clients", "2", "--searches", "4", "--base-docs", "4", "--ingest-docs", "4", "--baseline", "2"]
    result = _script("bench_api_load.py", args, data_dir, out)
    assert result["searches"] == 8 and result["errors"] == 0
    assert result["lost_points"] == 0 and result["unexpected_points"] == 0 and result["stored_ids_unique"]
    assert result["points_after"] == result["expected_points"] > 8
    assert result["latency_ms"]["p95"] >= result["latency_ms"]["p50"] > 0
    assert result["baseline_no_ingest_ms"]["n"] == 4 and result["p95_ratio_during_ingest_to_baseline"] > 0
    assert "REST API under load" in _report(out.parent, tmp_path)
