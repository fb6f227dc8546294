"""`mmrag search` from a fresh process: wall time and peak RSS, full models against the stored ones.

Every `mmrag search` is a new process, so what a CLI user waits for is mostly start-up: imports (torch,
open_clip, torchvision, transformers) and building the models. `mmrag ingest` (or the first search)
stores the encoder's text tower (`mmrag.encoders.query_tower`) and the cross-encoder
(`mmrag.rerank.stored`) as ONNX; later text queries run from them without torch. This benchmark ingests
two Markdown READMEs of the shared ingest folder into a temporary Qdrant Edge store with `lite` and
`--reranker` (default the offline MiniLM cross-encoder), then times whole processes (`python -m mmrag.cli
search ...`, interpreter start to exit) in alternating rounds:

* `full`: `MMRAG_QUERY_CACHE=off`, the full models (what every search did before the cache);
* `tower`: the text tower and reranker `mmrag ingest` stored;

each for `hybrid` (the store's first stage, `--no-rerank`) and `hybrid + rerank` (both stages).

Usage: python benchmarks/bench_cli_start.py [--repeats 5] [--reranker minilm] [--stages hybrid ...]
       [--out benchmarks/results/cli_start.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import run_record

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MMRAG_DATA") or REPO.parent / "shared" / "data")
DOCS = ("itm-flickr8k-project-README.md", "unstructured-README.md")
QUERY = "how do I install the package"
STAGES = {"hybrid": ["--no-rerank"], "hybrid + rerank": ["--rerank"]}
# The child reports its own peak RSS (VmHWM) after the command ran, as bench_query.py's probe does.
PROBE = """
import contextlib, io, sys
from mmrag.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    code = main(sys.argv[1:])
print([ln for ln in open("/proc/self/status") if ln.startswith("VmHWM")][0].split()[1])
sys.exit(code)
"""


def run_search(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds of a whole `mmrag search` process and its peak RSS in MB."""
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], env=env, capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        sys.exit(f"search failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return wall, int(out.stdout.strip().splitlines()[-1]) / 1024.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5, help="alternating rounds (medians reported)")
    ap.add_argument("--reranker", default="minilm", help="cross-encoder of the rerank rows")
    ap.add_argument("--stages", nargs="+", choices=list(STAGES), default=list(STAGES))
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "cli_start.json")
    args = ap.parse_args()
    if args.repeats < 1:
        sys.exit("--repeats must be >= 1")
    with tempfile.TemporaryDirectory(prefix="mmrag-cli-") as tmp:
        root = Path(tmp)
        (root / "docs").mkdir()
        for name in DOCS:
            shutil.copy(DATA / "ingest_demo" / "markdown" / name, root / "docs")
        base = {**os.environ, "MMRAG_THREADS": "1", "HF_HUB_OFFLINE": "1"}
        tower_env = {**base, "MMRAG_QUERY_CACHE": str(root / "towers")}
        store = str(root / "store")
        cmd = [sys.executable, "-m", "mmrag.cli", "ingest", str(root / "docs"), "--store", store, "-q"]
        subprocess.run([*cmd, "--reranker", args.reranker], env=tower_env, check=True, capture_output=True)
        stored = [p for p in (root / "towers").iterdir() if not p.name.startswith(".")]
        want = 2 if "hybrid + rerank" in args.stages else 1
        if len(stored) < want:
            sys.exit(f"mmrag ingest stored {len(stored)} models, expected {want}")
        envs = {"full": {**base, "MMRAG_QUERY_CACHE": "off"}, "tower": tower_env}
        stages = {name: STAGES[name] for name in args.stages}
        samples: dict[str, dict[str, list[tuple[float, float]]]] = {s: {m: [] for m in envs} for s in stages}
        for extra in stages.values():  # a first, untimed run of each: files in the page cache
            for env in envs.values():
                run_search(["search", QUERY, "--store", store, "--k", "5", *extra], env)
        for _ in range(args.repeats):
            for stage, extra in stages.items():
                for mode, env in envs.items():
                    argv = ["search", QUERY, "--store", store, "--k", "5", *extra]
                    samples[stage][mode].append(run_search(argv, env))
    rows: dict[str, dict[str, Any]] = {}
    for stage, by_mode in samples.items():
        row: dict[str, Any] = {
            mode: {
                "wall_s": round(float(np.median([w for w, _ in runs])), 2),
                "peak_rss_mb": round(float(np.median([r for _, r in runs]))),
            }
            for mode, runs in by_mode.items()
        }
        row["ratio_tower_to_full"] = round(row["tower"]["wall_s"] / row["full"]["wall_s"], 3)
        rows[stage] = row
    out = {**run_record(), "repeats": args.repeats, "reranker": args.reranker, "query": QUERY, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(rows, indent=2))


def report_section(r: dict[str, Any]) -> str:
    lines = [
        "## `mmrag search` start-up: the stored text tower and reranker against the full models",
        "",
        f"Command: `{r['command']}` ({r['measured']} UTC). Whole processes, interpreter start to exit, "
        f"medians of {r['repeats']} alternating rounds; a two-README Qdrant Edge store built with `lite` "
        f"and `--reranker {r['reranker']}` by `mmrag ingest`, which stored the text tower "
        "(`mmrag.encoders.query_tower`) and the cross-encoder (`mmrag.rerank.stored`, fp32 ONNX). `full` is "
        "`MMRAG_QUERY_CACHE=off`: the full models, as every search ran before (the cross-encoder in bf16 "
        "where the CPU has bf16 instructions).",
        "",
        "| stages | full models: s, peak RSS | stored: s, peak RSS | stored / full (time) |",
        "|---|---|---|---|",
    ]
    for stage, row in r["rows"].items():
        full, tower = row["full"], row["tower"]
        lines.append(
            f"| {stage} | {full['wall_s']:.2f} s, {full['peak_rss_mb']} MB | "
            f"{tower['wall_s']:.2f} s, {tower['peak_rss_mb']} MB | **{row['ratio_tower_to_full']:.2f}x** |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
