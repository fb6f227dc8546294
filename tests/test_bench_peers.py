"""Smoke run of the peer benchmark (mmrag vs LangChain vs Haystack) so the script cannot rot.

The peers are installed by the ``bench`` extra (part of ``dev``); when one is missing the script exits with
the install line and this test fails: a peer comparison that silently skips its peers would prove nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_benchmarks import _report

REPO = Path(__file__).resolve().parents[1]
SYSTEMS = {"mmrag", "langchain", "haystack", "mmrag_hybrid"}


@pytest.mark.slow
def test_peer_benchmark_smoke(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "results" / "peers.json"
    env = {"MMRAG_DATA": str(data_dir), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    if "PYTHONPATH" in os.environ:  # a worktree run (PYTHONPATH=src) tests its own sources
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    cmd = [sys.executable, str(REPO / "benchmarks" / "bench_peers.py"), "--smoke", "--out", str(out)]
    cmd += ["--reranker", str(tmp_path / "none"), "--cache", str(tmp_path / "cache")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["smoke"] and r["queries"] == 4 and r["corpus"] >= 40
    assert set(r["systems"]) == SYSTEMS
    for name, s in r["systems"].items():
        assert s["index_s"] > 0, name
        assert 0 <= s["quality"]["dense"]["ndcg@10"] <= 1 and 0 <= s["quality"]["dense"]["recall@100"] <= 1
        assert 0 <= s["quality"]["rerank"]["ndcg@10"] <= 1
        lat = s["latency_ms"]
        assert all(lat[k] > 0 for k in ("dense_p50", "dense_p95", "rerank_p50", "rerank_p95", "encode_p50"))
        assert set(s["ratio_to_mmrag"]) == {"index", "dense_p50", "dense_p95", "rerank_p50", "rerank_p95"}
    # same vectors, exact search on a slice this small: the dense top 10 must agree
    for peer in ("langchain", "haystack"):
        assert r["dense_top10_vs_mmrag"][peer]["mean_overlap@10"] == 1.0
    assert not r["reranker"]["trained"]  # no checkpoint given: the offline MiniLM head, shared by all
    assert "## Peers" in _report(out.parent, tmp_path)


def test_peer_report_renders_committed_results(tmp_path: Path) -> None:
    """The committed full run renders into its BENCHMARKS.md section (no models needed)."""
    results = tmp_path / "results"
    results.mkdir()
    committed = REPO / "benchmarks" / "results" / "peers.json"
    (results / "peers.json").write_text(committed.read_text())
    md = _report(results, tmp_path)
    assert "## Peers" in md
    for name in SYSTEMS:
        assert f"| {name} |" in md
    assert "Image queries" in md
