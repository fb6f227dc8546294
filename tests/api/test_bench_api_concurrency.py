"""Smoke run of benchmarks/bench_api_concurrency.py (a second of load per row, not a measurement)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_benchmarks import _report, _script


@pytest.mark.slow
def test_api_concurrency_benchmark_smoke(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "results" / "api_concurrency.json"
    args = ["--seconds", "0.5", "--clients", "1", "8", "--configs", "batched", "--base-docs", "6"]
    args += ["--rounds", "2"]
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
    # --rounds 2: each row without an ingest is the median of two rounds (both kept), ingest rows run once
    assert all(len(r["qps_rounds"]) == 2 for r in rows if not r["ingest"])
    assert all("qps_rounds" not in r for r in rows if r["ingest"]) and result["rounds"] == 2
    cpu = result["targets"]["batched"]["cpu"]
    eight = rows[1]  # dense, 8 clients: the target's CPU figure is that row's server + clients
    assert cpu["ms_per_search_8"] == round(eight["server_cpu_ms"] + eight["client_cpu_ms"], 2)
    assert cpu["cores_busy_8"] == eight["cores_busy"]
    assert result["commit"] and result["measured"] and result["command"].startswith("python benchmarks/")
    report = _report(out.parent, tmp_path)
    assert "REST API concurrency: micro-batched searches" in report and "| batched | rerank | 8 |" in report
    assert "`batched`, CPU (server + clients) per dense search:" in report
    assert "`batched`, dense, 8 clients / 1 client in each of the 2 rounds: " in report
    assert "--rounds 2 " in report and "the median of 2 rounds" in report
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


def test_cpu_seconds_reads_a_process_from_proc(monkeypatch: pytest.MonkeyPatch) -> None:
    """The server's CPU comes from /proc/<pid>/stat (utime + stime): for this process it must agree
    with time.process_time(), which reads the same counters another way."""
    import os
    import time

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from bench_api_concurrency import cpu_seconds  # type: ignore[import-not-found]

    end = time.process_time() + 0.3
    while time.process_time() < end:  # burn CPU so that both counters have moved
        pass
    ours, proc = time.process_time(), cpu_seconds(os.getpid())
    assert proc > 0.3 and abs(proc - ours) < 0.1  # clock ticks: 10 ms steps


def test_report_reads_rows_without_the_cpu_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    """A results file from before the CPU columns: dashes in the table, no CPU bullet, and the
    summary row without the cores-busy clause."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from report_api import api_concurrency_section, api_concurrency_summary_row, targets  # type: ignore[import-not-found]

    def row(clients: int, qps: float) -> dict[str, object]:
        return {
            "config": "batched", "stage": "dense", "clients": clients, "ingest": False, "searches": 10,
            "qps": qps, "p50_ms": 5.0, "p95_ms": 9.0, "status": {"200": 10}, "mean_encode_batch": 1.0,
            "mean_rerank_batch": None,
        }  # fmt: skip

    old = {
        "rows": [row(1, 100.0), row(8, 250.0)], "seconds_per_row": 6, "base_docs": 300, "ingest_docs": 100,
        "reranker": "r", "model": "lite", "torch_threads": 1,
    }  # fmt: skip
    assert targets(old["rows"], 2)["batched"] == {
        "dense_qps_8_over_1": 2.5,
        "dense_p95_8_ms": 9.0,
        "met": False,
    }
    section = api_concurrency_section(old)
    assert "| 1.0 | None | - | - |" in section and "CPU (server + clients)" not in section
    assert api_concurrency_summary_row(old) == (
        "| REST API, dense, 8 clients / 1, micro-batched, an unrecorded CPU | 250.0 / 100.0 q/s, p95 at 8 "
        "9.0 ms | **2.5x** (target >= 3x) |"
    )


def test_median_row_takes_each_figure_s_median_and_sums_the_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from bench_api_concurrency import median_row  # type: ignore[import-not-found]

    def rnd(qps: float, p95: float, cpu: float | None, codes: dict[str, int]) -> dict[str, object]:
        return {
            "searches": sum(codes.values()), "qps": qps, "p50_ms": 5.0, "p95_ms": p95, "status": codes,
            "mean_encode_batch": 2.0, "mean_rerank_batch": None, "wall_s": 6.0, "cores_busy": 1.5,
            "server_cpu_ms": cpu, "client_cpu_ms": 0.3, "during_ingest": None, "ingest_s": None,
        }  # fmt: skip

    rounds = [rnd(100.0, 9.0, 8.0, {"200": 600}), rnd(80.0, 12.0, 9.0, {"200": 470, "503": 10}),
              rnd(120.0, 10.0, 7.0, {"200": 720})]  # fmt: skip
    row = median_row(rounds)
    assert row["qps"] == 100.0 and row["p95_ms"] == 10.0 and row["server_cpu_ms"] == 8.0
    assert row["qps_rounds"] == [100.0, 80.0, 120.0] and row["wall_s"] == 18.0
    assert row["status"] == {"200": 1790, "503": 10} and row["searches"] == 1800
    assert row["mean_rerank_batch"] is None  # no rerank in any round: no figure, not a 0
    rounds[1]["server_cpu_ms"] = None  # a round without the figure: the row has none
    assert median_row(rounds)["server_cpu_ms"] is None
    assert median_row(rounds[:1]) is rounds[0]  # one round: the row as measured
    # an even count: the mean of the middle two; a round without one answer (NaN latency) left out
    two = median_row(rounds[:2])
    assert two["qps"] == 90.0 and two["p95_ms"] == 10.5 and two["qps_rounds"] == [100.0, 80.0]
    failed = rnd(0.0, float("nan"), 9.0, {"503": 40})
    got = median_row([rounds[0], failed, rounds[2]])
    assert got["p95_ms"] == 9.5 and got["qps"] == 100.0 and got["status"] == {"200": 1320, "503": 40}


def test_report_gives_each_round_s_ratio(monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-round 8/1 bullet: one ratio per round in order, "-" for a round whose one-client row
    answered nothing, and no bullet for single-round results or rounds that do not pair up."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from report_api import _rounds_bullet  # type: ignore[import-not-found]

    def rows(one: list[float], eight: list[float]) -> dict[str, object]:
        base = {"config": "batched", "stage": "dense", "ingest": False}
        return {
            "rows": [
                {**base, "clients": 1, "qps_rounds": one},
                {**base, "clients": 8, "qps_rounds": eight},
            ]
        }

    line = _rounds_bullet(rows([100.0, 0.0, 80.0], [250.0, 240.0, 200.0]), "batched")
    assert line is not None and "each of the 3 rounds: 2.50x, -, 2.50x (q/s at 1: 100.0, 0.0, 80.0;" in line
    assert _rounds_bullet(rows([100.0, 90.0], [250.0]), "batched") is None
    single = {
        "rows": [{"config": "batched", "stage": "dense", "ingest": False, "clients": c} for c in (1, 8)]
    }
    assert _rounds_bullet(single, "batched") is None


def test_report_has_a_section_and_a_summary_row_per_host_class(tmp_path: Path) -> None:
    """``api_concurrency*.json``: one file per host class, each its own section and summary row."""
    results = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "api_concurrency.json"
    run = json.loads(results.read_text())
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "api_concurrency.json").write_text(json.dumps(run))
    other = {**run, "machine": {**run["machine"], "cpu": "Other CPU (family 1, model 2)"}}
    (folder / "api_concurrency_other.json").write_text(json.dumps(other))
    report = _report(folder, tmp_path)
    heads = [line for line in report.splitlines() if line.startswith("## REST API concurrency")]
    assert heads == [
        f"## REST API concurrency: micro-batched searches, on {run['machine']['cpu']}",
        "## REST API concurrency: micro-batched searches, on Other CPU (family 1, model 2)",
    ]
    rows = [line for line in report.splitlines() if line.startswith("| REST API, dense, 8 clients / 1")]
    assert len(rows) == 2 and "Other CPU (family 1, model 2)" in rows[1]
