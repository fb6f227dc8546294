"""benchmarks/result_files.py: the results files report.py renders BENCHMARKS.md from."""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_result_files_parse_each_file_once(tmp_path: Path) -> None:
    # report.py's summary table and its sections quote the same files through one ResultFiles:
    # each file parsed once, then reused, never re-read
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from result_files import ResultFiles  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    (tmp_path / "cold_demo_b.json").write_text(json.dumps({"host": "b"}))
    (tmp_path / "cold_demo.json").write_text(json.dumps({"host": "a"}))
    (tmp_path / "rerank.json").write_text(json.dumps({"n": 1}))
    res = ResultFiles(tmp_path)
    first = res.get("rerank.json")
    assert first == {"n": 1} and res.get("missing.json") is None
    (tmp_path / "rerank.json").write_text("not json: a second read would fail")
    assert res.get("rerank.json") is first
    assert [(n, r["host"]) for n, r in res.glob("cold_demo*.json")] == [
        ("cold_demo.json", "a"),
        ("cold_demo_b.json", "b"),
    ]
