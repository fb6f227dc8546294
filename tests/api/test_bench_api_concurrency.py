"""Smoke run of benchmarks/bench_api_concurrency.py (a second of load per row, not a measurement)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_benchmarks import _report, _script


@pytest.mark.slow
def test_api_concurrency_benchmark_smoke(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "results" / "api_concurrency.json"
    args = ["--seconds", "0.5", "--clients", "1", "2", "--configs", "batched", "--base-docs", "6"]
    result = _script("bench_api_concurrency.py", [*args, "--ingest-docs", "2"], data_dir, out)
    rows = result["rows"]
    assert [(r["stage"], r["clients"], r["ingest"]) for r in rows] == [
        ("dense", 1, False),
        ("dense", 2, False),
        ("rerank", 1, False),
        ("rerank", 2, False),
        ("dense", 2, True),
        ("rerank", 2, True),
    ]
    assert all(r["searches"] > 0 and set(r["status"]) <= {"200", "503"} for r in rows)
    assert all(r["p95_ms"] >= r["p50_ms"] > 0 for r in rows if r["qps"])
    assert rows[2]["mean_rerank_batch"] == 1.0 and rows[0]["mean_rerank_batch"] is None
    report = _report(out.parent, tmp_path)
    assert "REST API concurrency: micro-batched searches" in report and "| batched | rerank | 2 |" in report
    # what the server ran on (the api extra brings uvloop + httptools; uvicorn picks them up itself)
    assert result["server_stack"] == {"loop": "uvloop", "http": "httptools"}
    assert "event loop uvloop, HTTP parser httptools" in report


def test_json_body_types_the_form_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--body json`` sends the form's fields typed, the query text as it is (``POST /query``)."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from bench_api_concurrency import STAGES, json_body  # type: ignore[import-not-found]

    form = {"query": "1984", "k": "10", **STAGES["rerank"]}
    assert json_body(form) == {"query": "1984", "k": 10, "mode": "hybrid", "rerank": True, "pool": 20}
    assert json_body({"query": "q", **STAGES["dense"]})["rerank"] is False
