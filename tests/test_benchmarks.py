"""Smoke run of the benchmark scripts (seconds of work, not a measurement) so they cannot rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


def _script(name: str, args: list[str], data_dir: Path, out: Path) -> dict[str, Any]:
    """Run a benchmark script writing ``out``; return its JSON result."""
    env = {"MMRAG_DATA": str(data_dir), "PATH": "/usr/bin:/bin"}
    env["MMRAG_QUERY_CACHE"] = os.environ["MMRAG_QUERY_CACHE"]  # the session's (tests/conftest.py)
    if "PYTHONPATH" in os.environ:  # a worktree run (PYTHONPATH=src) tests its own sources
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    cmd = [sys.executable, str(REPO / "benchmarks" / name), *args, "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, env=env, timeout=600)
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def _report(results: Path, tmp_path: Path) -> str:
    """BENCHMARKS.md rendered from the results folder."""
    md = tmp_path / "BENCHMARKS.md"
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "report.py"),
        "--results",
        str(results),
        "--output",
        str(md),
    ]
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    return md.read_text()


@pytest.mark.slow
def test_query_benchmark_smoke(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "results" / "query.json"
    args = ["--points", "400", "--docs", "150", "--queries", "5", "--repeats", "1"]
    result = _script("bench_query.py", args, data_dir, out)
    assert result["points"] == 400 and result["real_points"] == 150
    assert result["median_of_runs_ms"]["total_p95"] > 0 and result["search_peak_rss_mb"] > 100
    assert 0 <= result["median_of_runs_ms"]["recall@10"] <= 1
    assert "p95 total / 50 ms limit" in _report(out.parent, tmp_path)


@pytest.mark.slow
def test_train_sweep_smoke(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "results" / "train_sweep.json"
    args = ["--limit", "30", "--epochs", "2", "--only", "4", "6", "--cache", str(tmp_path / "cache")]
    result = _script("train_sweep.py", args, data_dir, out)
    assert result["base"] == "lite" and [r["loss"] for r in result["runs"]] == ["triplet", "infonce"]
    assert all(0 <= r["t2i_recall@10"] <= 1 for r in result["runs"])
    assert "Triplet head training" in _report(out.parent, tmp_path)


@pytest.mark.slow
def test_image_tower_sweep_smoke(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "results" / "image_tower_sweep.json"
    args = ["--models", "lite", "--blocks", "0", "1", "all", "--augment", "off", "on", "--views", "2"]
    args += ["--epochs", "1", "--limit", "12", "--device", "cpu", "--quiet", "--cache", str(tmp_path / "c")]
    rows = _script("sweep_image_tower.py", args, data_dir, out)["rows"]
    cells = [(r["blocks"], r["augment"]) for r in rows]
    assert cells == [(0, False), ("1", False), ("1", True), ("all", False), ("all", True)]
    assert all(r["device"] == "cpu" for r in rows)
    assert [r["skipped"] for r in rows[3:]] and all("dev" not in r for r in rows[3:])  # whole trunk on CPU
    for r in rows[:3]:
        assert 0 <= r["dev"]["t2i_recall@10"] <= 1 and r["minutes"] >= 0 and r["curve"]
    assert rows[2]["views"] == 2 and out.with_suffix(".png").exists()
    assert "Fine-tuning the image tower" in _report(out.parent, tmp_path)
    # --merge re-measures the cells asked for and keeps the others
    again = ["--models", "lite", "--blocks", "0", "--epochs", "1", "--limit", "12", "--device", "cpu"]
    again += ["--quiet", "--cache", str(tmp_path / "c"), "--merge"]
    merged = _script("sweep_image_tower.py", again, data_dir, out)["rows"]
    assert [(r["blocks"], r["augment"]) for r in merged] == cells
    assert merged[1:] == rows[1:]


@pytest.mark.slow
def test_train_extras_smoke(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "results" / "train_extras.json"
    common = ["--limit", "12", "--epochs", "2", "--cache", str(tmp_path / "cache")]
    _script("train_extras.py", ["unfreeze", *common, "--unfreeze-epochs", "1"], data_dir, out)
    result = _script("train_extras.py", ["loop", *common, "--mine-k", "3"], data_dir, out)
    assert set(result) == {"unfreeze", "loop"}
    assert (
        result["unfreeze"]["unfrozen"]["t2i_recall@10"] >= result["unfreeze"]["heads_only"]["t2i_recall@10"]
    )
    loop = result["loop"]
    assert loop["old"]["queries"] == 60 and loop["switched"] == (loop["default_vector"] == loop["new_vector"])
    md = _report(out.parent, tmp_path)
    assert "Closed loop" in md and "Unfreezing the last 1" in md


@pytest.mark.slow
def test_ingest_benchmark_smoke(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "results" / "ingest.json"
    result = _script("bench_ingest.py", ["--images", "4", "--abstracts", "4"], data_dir, out)
    assert result["images"]["items"] == 4 and result["text"]["files"] == 4
    assert result["images"]["ratio"] > 0 and result["text"]["ratio"] > 0 and result["peak_rss_mb"] > 100
    assert "Ingest throughput" in _report(out.parent, tmp_path)


@pytest.mark.slow
def test_rerank_benchmark_smoke(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "results" / "rerank.json"
    args = ["--reranker", str(tmp_path / "none"), "--docs", "60", "--queries", "3", "--pools", "3", "5"]
    args += ["--depth", "10", "--latency-queries", "1", "--cache", str(tmp_path / "cache")]
    result = _script("bench_rerank.py", args, data_dir, out)
    assert result["queries"] == 3 and result["corpus"] >= 60
    q = result["quality"]
    assert set(q) >= {
        "bm25",
        "dense",
        "hybrid",
        "hybrid+rerank@3",
        "hybrid+rerank@5",
        "hybrid+rerank@3_int8",
        "hybrid+rerank@3_bf16",
    }
    assert all(0 <= m["ndcg@10"] <= 1 for m in q.values()) and q["bm25"]["recall@100"] > 0
    assert set(result["latency"]) == {f"{v}@{p}" for v in ("fp32", "bf16", "int8") for p in (3, 5)}
    assert set(result["variants_vs_fp32"]) == {"bf16", "int8"}
    assert {"end_to_end_bf16_pool3_p50_ms", "end_to_end_fp32_pool3_p95_ms"} <= set(result)
    assert result["matmul_gflops"] > 0 and all(v["gflops"] > 0 for v in result["latency"].values())
    md = _report(out.parent, tmp_path)
    assert "Hybrid search and cross-encoder reranking" in md
    # the section says what it ran on (bf16 rows depend on the CPU) and which reranker it measured
    m = result["machine"]
    assert f"on {m['cpus']} x {m['cpu']} (bf16 instructions: {m['bf16']})" in md
    assert "Reranker: offline MiniLM with an untrained head." in md


@pytest.mark.slow
def test_rerank_depth_benchmark_smoke(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "results" / "rerank_depth.json"
    args = ["--reranker", str(tmp_path / "a" / "none"), str(tmp_path / "b" / "none"), "--docs", "60"]
    args += ["--queries", "4", "--pools", "3", "5", "--depth", "10", "--latency-queries", "2"]
    args += ["--rounds", "2", "--cache", str(tmp_path / "cache")]
    result = _script("bench_rerank_depth.py", args, data_dir, out)
    assert list(result["rerankers"]) == ["none#0", "none#1"]  # same folder name: told apart
    for e in result["rerankers"].values():
        assert e["layers"] == 6 and e["trained"] is None
        assert set(e["quality"]) == {f"{k}@{p}" for k in ("+rerank", "rerank_only") for p in (3, 5)} | {
            "+rerank@3_crossfit",
            "+rerank@5_crossfit",
        }
        assert (
            len(e["rounds_p50_ms"]) == 2 and e["end_to_end_pool3_p95_ms"] >= e["end_to_end_pool3_p50_ms"] > 0
        )
    other = dict(result, machine=dict(result["machine"], cpu="Other CPU (family 6, model 143)"))
    # a run with LangChain's rounds (the smoke skips them) also gets a summary row
    other["rerankers"] = {k: dict(e, ratio_langchain=0.3) for k, e in result["rerankers"].items()}
    (out.parent / "rerank_depth_other.json").write_text(json.dumps(other))  # a second host's run
    md = _report(out.parent, tmp_path)
    # titled by the host and the depths it holds (no teacher here: none distilled)
    assert md.count("## Reranker depth") == 2 and "6 layers, on Other CPU (family 6, model 143)" in md
    assert "distilled" not in md.split("## Reranker depth", 1)[1].split("\n", 1)[0]
    summary = md.split("## Summary", 1)[1].split("\n## ", 1)[0]
    assert "6-layer `none#0`, end to end, 1 thread, Other CPU (family 6, model 143)" in summary
    assert "**0.30x** LangChain's" in summary and summary.count("6-layer `none#") == 1
    # a third host's run with a 3-layer student distilled from a 6-layer teacher: both depths and
    # "some distilled" in its title; its summary row is the 6-layer reference, never the student
    third = dict(other, machine=dict(result["machine"], cpu="Third CPU (family 25, model 17)"))
    student = dict(other["rerankers"]["none#1"], layers=3, ratio_langchain=0.2)
    student["trained"] = {"teacher": "/ckpt/rr-l6", "freeze_layers": 1, "steps": 800, "seed": 0}
    third["rerankers"] = {"none#0": other["rerankers"]["none#0"], "rr-l3d": student}
    (out.parent / "rerank_depth_third.json").write_text(json.dumps(third))
    md = _report(out.parent, tmp_path)
    assert "## Reranker depth: 3 and 6 layers, some distilled, on Third CPU (family 25, model 17)" in md
    assert "| `rr-l3d` | 3 | distilled from `rr-l6`, 1 frozen |" in md
    summary = md.split("## Summary", 1)[1].split("\n## ", 1)[0]
    assert "Third CPU (family 25, model 17) (`rerank_depth_third.json`)" in summary
    assert "`rr-l3d`" not in summary and "**0.20x**" not in summary


@pytest.mark.slow
def test_scale_benchmark_smoke(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "results" / "scale.json"
    result = _script("bench_scale.py", ["--smoke"], data_dir, out)
    runs = {(r["backend"], r["size"]): r for r in result["runs"]}
    assert set(runs) == {("edge", 200), ("edge", 400), ("memory", 200), ("memory", 400)}
    for run in runs.values():
        assert run["points"] == run["size"]
        assert {"encode", "ann", "total"} <= set(run["stages"]["text"]) <= {"encode", "ann", "total"}
        assert {"encode", "ann", "total"} == set(run["stages"]["image"])
        assert all(0 <= v["recall@10"] <= 1 for v in run["ef"].values())
    assert set(runs["edge", 400]["ef"]) == {"default", "16"} and set(runs["memory", 400]["ef"]) == {"default"}
    md = _report(out.parent, tmp_path)
    assert "Query latency against collection size: 200 to 400 points" in md
    assert (out.parent / "scale.png").stat().st_size > 10_000 and "](results/scale.png)" in md


@pytest.mark.slow
def test_image_path_benchmark_smoke(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "results" / "image_path.json"
    args = ["--images", "4", "--repeats", "1", "--threads", "1"]
    result = _script("bench_image_path.py", args, data_dir, out)
    assert result["gflop_per_image"] > 0.5  # Lite0: 0.77 GFLOP
    [run] = result["runs"]
    assert run["ceiling_gflops"] > 0 and len(run["sets"]) == 2
    for s in run["sets"].values():
        assert set(s["images_per_s"]) == set(s["share_of_ceiling"]) and len(s["images_per_s"]) == 6
        assert "ONNX Runtime + draft decode, 1 decode thread" in s["images_per_s"]
        assert s["parity_onnx_vs_torch"] >= 0.999 and s["parity_draft_vs_full"] > 0.99
    assert result["decode_workers"] >= 1
    assert "Image path against the hardware" in _report(out.parent, tmp_path)


@pytest.mark.slow
def test_text_path_benchmark_smoke(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "results" / "text_path.json"
    args = ["--queries", "32", "--docs", "8", "--repeats", "1", "--threads", "1"]
    result = _script("bench_text_path.py", args, data_dir, out)
    [run] = result["runs"]
    assert set(run["precisions"]) == {"fp32", "bf16", "bf16 padded"} and run["ceiling_gflops"] > 0
    for row in run["precisions"].values():
        assert set(row["query_ms"]) == {"1", "2", "4", "8", "32"} and all(
            v > 0 for v in row["query_ms"].values()
        )
        assert row["docs_per_s"] > 0
    assert run["parity_bf16_vs_fp32"] >= 0.999 and result["ndcg@10"] is None
    md = _report(out.parent, tmp_path)
    assert "Text path: fp32 against the bf16 copy, on " in md  # one section per host class
    assert "| text encode, SciFact abstracts, batch 32, 1 thread(s), bf16 copy, " in md  # its summary row
    assert "| 1 | bf16 padded |" in md


@pytest.mark.slow
def test_edge_threads_benchmark_smoke(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "results" / "edge_threads.json"
    args = ["--sizes", "300", "--queries", "20", "--repeats", "1", "--seconds", "0.2", "--dim", "16"]
    result = _script("bench_edge_threads.py", args, data_dir, out)
    assert result["settings"] == ["pool", "1"]
    row = result["sizes"]["300"]["settings"]
    for v in row.values():
        assert 0 < v["p50_ms"] <= v["p95_ms"] and v["exact_p50_ms"] > 0 and v["beside_python"] > 0
    md = _report(out.parent, tmp_path)
    assert "Qdrant Edge search threads" in md and "1, the calling thread (default)" in md


@pytest.mark.slow
def test_retriever_concurrency_benchmark_smoke(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "results" / "retriever_concurrency.json"
    args = ["--clients", "1", "4", "--seconds", "0.5", "--repeats", "2", "--docs", "20"]
    result = _script("bench_retriever_concurrency.py", args, data_dir, out)
    assert set(result["rows"]) == {"1", "4"}
    for row in result["rows"].values():
        assert row["searches"] > 0 and 0 < row["p50_ms"] <= row["p95_ms"] and len(row["qps_rounds"]) == 2
    assert result["rows"]["1"]["mean_encode_batch"] == 1.0  # one caller never shares a pass
    md = _report(out.parent, tmp_path)
    assert "In-process concurrency" in md and "8 callers" not in md  # no 8-caller row: no ratio line


@pytest.mark.slow
def test_quantization_benchmark_smoke(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "results" / "quantization.json"
    args = ["--points", "400", "--queries", "5", "--repeats", "1", "--cache", str(tmp_path / "cache")]
    result = _script("bench_quantization.py", [*args, "--windows"], data_dir, out)
    assert result["points"] == 400 and set(result["configs"]) == {"float32", "int8"}
    assert result["windows"] and result["gap_10_11"] >= 0
    int8 = result["configs"]["int8"]
    assert set(int8) >= {"rescore", "rescore, oversampling 2", "no rescore", "store_rss_mb", "disk_mb"}
    assert all(0 <= int8[m]["recall@10"] <= 1 for m in ("rescore", "no rescore"))
    # true cosines of what was found over the exact top 10's: 1 when found == exact
    for row in (result["configs"]["float32"]["default"], int8["rescore"]):
        assert 0 < row["score_ratio"] <= 1 + 1e-5
        assert row["recall@10"] < 1 or row["score_ratio"] == pytest.approx(1, abs=1e-5)
    md = _report(out.parent, tmp_path)
    assert "Store quantization, 400 points" in md and "word windows of the abstracts" in md


def test_quantization_report_renders_runs_without_score_ratios(tmp_path: Path) -> None:
    # results written before the score ratio existed (the committed 100k run) still render, with "-"
    row = {"p50_ms": 0.5, "p95_ms": 0.7, "recall@10": 0.98}
    old = {
        "machine": {"cpus": 2},
        "measured": "2026-11-30 16:45",
        "command": "python benchmarks/bench_quantization.py",
        "points": 1000,
        "texts": 800,
        "images": 200,
        "queries": 5,
        "configs": {
            "float32": {"default": row, "store_rss_mb": 30.0, "disk_mb": 40.0, "build_s": 1.0},
            "int8": {"rescore": row, "store_rss_mb": 15.0, "disk_mb": 45.0, "build_s": 1.0},
        },
    }
    results = tmp_path / "results"
    results.mkdir()
    (results / "quantization.json").write_text(json.dumps(old))
    md = _report(results, tmp_path)
    assert "| float32 | default | 0.50 | 0.70 | 0.9800 | - | 30 | 40 | 1 |" in md
    assert "Serving RSS int8 / float32 = 0.50" in md and "word windows" not in md


@pytest.mark.slow
def test_cli_start_benchmark_smoke(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "results" / "cli_start.json"
    result = _script("bench_cli_start.py", ["--repeats", "1", "--stages", "hybrid"], data_dir, out)
    row = result["rows"]["hybrid"]
    assert row["tower"]["wall_s"] > 0 and row["full"]["wall_s"] > 0 and row["tower"]["peak_rss_mb"] > 0
    assert row["ratio_tower_to_full"] == pytest.approx(
        row["tower"]["wall_s"] / row["full"]["wall_s"], abs=0.01
    )
    md = _report(out.parent, tmp_path)
    assert "`mmrag search` start-up" in md and "| hybrid |" in md


def test_cold_demo_benchmark_reads_the_phases_make_prints(tmp_path: Path) -> None:
    # A real `make` run of a Makefile that prints what `make demo` prints at each phase (the real one
    # takes ~10 minutes: `python benchmarks/bench_cold_demo.py`), then the published table.
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import bench_cold_demo as cold
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    lines = [
        "python3 -m venv .venv",
        ".venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1",
        ".venv/bin/python -m pip install -q -e '.[all]'",
        "demo: no trained checkpoint at checkpoints/lite-flickr8k, so training the lite heads now",
        "demo: no reranker at checkpoints/reranker-demo, so training one on a SciFact slice now",
        '.venv/bin/mmrag ingest "data/ingest_demo" --model "checkpoints/lite-flickr8k"',
        ".venv/bin/mmrag info",
    ]
    recipe = "".join(f"\t@sleep 0.05; echo '{line}'\n" for line in lines)
    (tmp_path / "Makefile").write_text(f"demo:\n{recipe}")
    rc, total, starts = cold.run_demo(tmp_path, dict(os.environ), tmp_path / "log")
    assert rc == 0 and list(starts) == [name for name, _ in cold.PHASES]
    phases = cold.phase_seconds(starts, total)
    assert all(s >= 0 for s in phases.values()) and sum(phases.values()) == pytest.approx(total, abs=0.5)
    assert "mmrag info" in (tmp_path / "log").read_text()
    with pytest.raises(ValueError, match="reranker, ingest, searches"):
        cold.phase_seconds({k: v for k, v in starts.items() if k in ("sysdeps", "install: venv")}, total)
    result = {
        "command": "python benchmarks/bench_cold_demo.py",
        "measured": "2026-12-04 02:00",
        "machine": {"cpus": 2},
        "commit": "0123456789abcdef",
        "tesseract_installed_before": False,
        "limit_min": 12.0,
        "total_s": 600.0,
        "ratio_to_limit": 0.833,
        "phases_s": {name: 75.0 for name, _ in cold.PHASES},
    }
    results = tmp_path / "results"
    results.mkdir()
    (results / "cold_demo.json").write_text(json.dumps(result))
    md = _report(results, tmp_path)
    assert (
        "## Cold start: `make demo` on a fresh clone" in md and "| **10.0 min** | **0.83** of 12 min |" in md
    )
    assert "| 10.0 min (install 5.0, lite heads 1.2, reranker 1.2 min) | **0.83** of 12 min |" in md
    # a second host class's run: its own section and summary row, titled by its CPU
    other = dict(result, machine={"cpus": 2, "cpu": "Other CPU (family 6, model 143)"}, total_s=420.0)
    (results / "cold_demo_other.json").write_text(json.dumps(other))
    md = _report(results, tmp_path)
    assert md.count("## Cold start: `make demo` on a fresh clone") == 2
    assert "## Cold start: `make demo` on a fresh clone, on Other CPU (family 6, model 143)" in md
    assert "included, Other CPU (family 6, model 143), one run | 7.0 min" in md
    # --repeats: the median total and each phase's median, every run kept and named in the table
    runs = [
        {"tesseract_installed_before": i > 0, "total_s": t, "phases_s": {"a": t - 60.0, "b": 60.0 + i}}
        for i, t in enumerate((700.0, 580.0, 640.0))
    ]
    summary = cold.summarise(runs, 12.0)
    assert summary["total_s"] == 640.0 and summary["ratio_to_limit"] == pytest.approx(640 / 720, abs=1e-3)
    assert summary["phases_s"] == {"a": 580.0, "b": 61.0} and summary["runs"] == runs
    assert not summary["tesseract_installed_before"]
    section = cold.report_section({**result, **summary})
    assert "the median of 3 runs" in section and "totals 11.7, 9.7, 10.7 min" in section
    assert "installed by the first run" in section and "| **10.7 min** | **0.89** of 12 min |" in section
