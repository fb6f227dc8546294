"""Smoke run of benchmarks/bench_api_concurrency.py (a second of load per row, not a measurement)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_benchmarks import _report, _script


@pytest.mark.slow
def test_api_concurrency_benchmark_smoke(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "results" / "api_concurrency.json"
    args = ["--seconds", "0.5", "--clients", "1", "8", "--configs", "batched", "--base-docs", "6"]
    result = _script("bench_api_concurrency.py", [*args, "--ingest-docs", "2"], data_dir, out)
    rows = result["rows"]
    assert [(r["stage"], r["clients"], r["ingest"]) for r in rows] == [
        ("dense", 1, False),
        ("dense", 8, False),
        ("rerank", 1, False),
        ("rerank", 8, False),
        ("dense", 8, True),
        ("rerank", 8, True),
    ]
    assert all(r["searches"] > 0 and set(r["status"]) <= {"200", "503"} for r in rows)
    assert all(r["p95_ms"] >= r["p50_ms"] > 0 for r in rows if r["qps"])
    assert rows[2]["mean_rerank_batch"] == 1.0 and rows[0]["mean_rerank_batch"] is None
    # where the cores went: the server's and the clients' CPU, per search only without an ingest
    assert all(0 < r["cores_busy"] <= result["machine"]["cpus"] + 0.5 for r in rows)
    assert all(r["server_cpu_ms"] > 0 and r["client_cpu_ms"] > 0 for r in rows if not r["ingest"])
    assert all(r["server_cpu_ms"] is None for r in rows if r["ingest"])
    cpu = result["targets"]["batched"]["cpu"]
    assert cpu["ms_per_search_for_3x"] == round(1000 * result["machine"]["cpus"] / (3 * rows[0]["qps"]), 2)
    report = _report(out.parent, tmp_path)
    assert "REST API concurrency: micro-batched searches" in report and "| batched | rerank | 8 |" in report
    assert "`batched`, CPU (server + clients) per dense search:" in report
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
