"""A cold `make demo`: a fresh clone of this repository, timed from `make`'s first line to the last search.

What a newcomer waits for the first time, phase by phase, read off the lines `make demo` prints:

* `sysdeps`: the Debian packages the demo needs (tesseract for OCR of the scans), when missing;
* `install`: the venv (and pip upgraded), torch and torchvision from this disk, then
  `pip install -e '.[all]'` (the runtime extras; `make test` adds `.[dev]`), each timed;
* `lite heads`: tower features of Flickr8k extracted and cached, then the heads trained;
* `reranker`: the demo's cross-encoder trained on a SciFact slice (fixed steps) and validated;
* `ingest`: the sample folder and a Flickr8k slice into the demo store;
* `searches`: `mmrag info` and the demo's searches through both stages.

The clone is of the committed HEAD. The child runs with a fresh, empty `HOME` (no pip cache, no stored
query towers or ledgers from earlier runs) and without this process's virtualenv on `PATH`, so nothing
is warm but the operating system's page cache and Debian packages already installed (the result says
whether tesseract was). The limit is the 12 minutes of issue #16; the ratio is the total against it.
With ``--repeats N`` each run gets its own fresh clone and ``HOME``; the result is the median total (and
each phase's median), every run kept beside it.

Usage: python benchmarks/bench_cold_demo.py [--repeats 1] [--limit-min 12] [--workdir DIR] [--keep]
       [--out benchmarks/results/cold_demo.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, head_commit, run_record

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MMRAG_DATA") or REPO.parent / "shared" / "data")
# Each phase starts at the first line matching its pattern (make echoes the commands it runs).
PHASES = (
    ("sysdeps", None),
    ("install: venv", re.compile(r"-m venv ")),
    ("install: torch", re.compile(r"-m pip install -q torch")),
    ("install: project", re.compile(r"-m pip install -q -e ")),
    ("lite heads", re.compile(r"^demo: (no trained checkpoint|using the trained checkpoint)")),
    ("reranker", re.compile(r"^demo: (no reranker|using the trained reranker)")),
    ("ingest", re.compile(r"/mmrag ingest ")),
    ("searches", re.compile(r"/mmrag info")),
)


def child_env(home: Path) -> dict[str, str]:
    """This environment without the caller's virtualenv and mmrag settings, with a fresh HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MMRAG_", "PIP_NO_CACHE"))}
    env.pop("VIRTUAL_ENV", None)
    if sys.prefix != sys.base_prefix:  # running from a venv: keep its bin/ off the child's PATH
        venv_bin = str(Path(sys.prefix) / "bin")
        env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env["HOME"] = str(home)
    env.pop("XDG_CACHE_HOME", None)
    env["MMRAG_DATA"] = str(DATA.resolve())
    return env


def run_demo(clone: Path, env: dict[str, str], log_path: Path) -> tuple[int, float, dict[str, float]]:
    """Run `make demo` in ``clone``; its exit code, wall seconds and the second each phase started."""
    starts: dict[str, float] = {"sysdeps": 0.0}
    t0 = time.perf_counter()
    with (
        log_path.open("w", encoding="utf-8") as log,
        subprocess.Popen(
            ["make", "demo"], cwd=clone, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as proc,
    ):
        assert proc.stdout is not None
        for line in proc.stdout:  # text mode: tqdm's carriage returns end lines too
            now = time.perf_counter() - t0
            log.write(f"{now:8.1f} {line.rstrip()}\n")
            for name, pattern in PHASES:
                if pattern is not None and name not in starts and pattern.search(line):
                    starts[name] = now
                    print(f"[{now:6.0f} s] {name}", flush=True)
        rc = proc.wait()
    return rc, time.perf_counter() - t0, starts


def phase_seconds(starts: dict[str, float], total: float) -> dict[str, float]:
    """Each phase's seconds: from its start to the next phase's start (the last to the end)."""
    names = [name for name, _ in PHASES]
    missing = [n for n in names if n not in starts]
    if missing:
        raise ValueError(f"make demo never printed the start of: {', '.join(missing)}")
    bounds = [starts[n] for n in names] + [total]
    return {n: round(bounds[i + 1] - bounds[i], 1) for i, n in enumerate(names)}


def cold_run(work: Path, *, keep: bool) -> dict[str, Any]:
    """One cold `make demo` in ``work`` (a fresh clone and HOME there): its total and phase seconds."""
    clone, home = work / "mmrag", work / "home"
    if clone.exists():
        sys.exit(f"{clone} exists: give an empty --workdir")
    home.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    tesseract_before = shutil.which("tesseract") is not None
    log_path = work / "make-demo.log"
    try:
        rc, total, starts = run_demo(clone, child_env(home), log_path)
        if rc != 0:
            tail = log_path.read_text(encoding="utf-8").splitlines()[-40:]
            sys.exit(f"make demo failed (exit {rc}); its last lines:\n" + "\n".join(tail))
        phases = phase_seconds(starts, total)
    finally:
        if not keep:
            shutil.rmtree(clone, ignore_errors=True)
            shutil.rmtree(home, ignore_errors=True)
    print(f"make demo's output, with seconds: {log_path}", flush=True)
    return {"tesseract_installed_before": tesseract_before, "total_s": round(total, 1), "phases_s": phases}


def summarise(runs: list[dict[str, Any]], limit_min: float) -> dict[str, Any]:
    """The median total and each phase's median over ``runs`` (the phases' medians need not add up to
    the total's), with every run kept."""
    total = statistics.median(r["total_s"] for r in runs)
    names = list(runs[0]["phases_s"])
    return {
        "tesseract_installed_before": runs[0]["tesseract_installed_before"],
        "limit_min": limit_min,
        "total_s": round(total, 1),
        "ratio_to_limit": round(total / (60 * limit_min), 3),
        "phases_s": {n: round(statistics.median(r["phases_s"][n] for r in runs), 1) for n in names},
        "runs": runs,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=1, help="cold runs, each on its own fresh clone")
    ap.add_argument("--limit-min", type=float, default=12.0, help="the target, minutes (issue #16)")
    ap.add_argument("--workdir", type=Path, help="where to clone [default: a new temporary folder]")
    ap.add_argument("--keep", action="store_true", help="keep the clone (its venv is ~5 GB)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "cold_demo.json")
    args = ap.parse_args()
    if args.repeats < 1:
        sys.exit("--repeats must be at least 1")
    if not (DATA / "flickr8k").is_dir() or not (DATA / "scifact").is_dir():
        sys.exit(f"no shared data at {DATA} (set MMRAG_DATA)")
    commit = head_commit()
    if commit is None:
        sys.exit(f"{REPO} is not a git checkout: the cold runs clone its committed HEAD")
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout
    if dirty.strip():
        print("note: the working tree has uncommitted changes; the clone has HEAD only", file=sys.stderr)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="mmrag-cold-demo-")).resolve()
    runs = []
    for i in range(args.repeats):
        where = work if args.repeats == 1 else work / f"run{i + 1}"
        runs.append(cold_run(where, keep=args.keep))
        print(f"run {i + 1}/{args.repeats}: {runs[-1]['total_s'] / 60:.1f} min", flush=True)
    out: dict[str, Any] = {**run_record(), "commit": commit, **summarise(runs, args.limit_min)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


def report_section(r: dict[str, Any]) -> str:
    total_min = r["total_s"] / 60
    phases = " | ".join(f"{s / 60:.1f}" for s in r["phases_s"].values())
    runs = r.get("runs", [])
    apt = (
        "tesseract was already installed, so `sysdeps` installed nothing"
        if r["tesseract_installed_before"]
        else "tesseract was installed by the first run"
        if len(runs) > 1
        else "tesseract was installed by the run"
    )
    limit = f"**{r['ratio_to_limit']:.2f}** of {r['limit_min']:g} min"
    if len(runs) > 1:
        totals = ", ".join(f"{x['total_s'] / 60:.1f}" for x in runs)
        how = (
            f"the median of {len(runs)} runs, each on its own fresh clone "
            f"(totals {totals} min; each phase its own median)"
        )
    else:
        how = "one run"
    cpu = (r.get("machine") or {}).get("cpu")
    lines = [
        "## Cold start: `make demo` on a fresh clone" + (f", on {cpu}" if cpu else ""),
        "",
        f"Command: `{r['command']}` ({r['measured']} UTC, commit {r['commit'][:7]}) on "
        f"{describe(r.get('machine') or {})}. A fresh clone, "
        "a fresh empty `HOME` (no pip cache, no stored query towers), nothing built: the whole first run "
        f"a newcomer waits for, install and every model it builds included, {how}. Each phase starts at "
        f"the line `make demo` prints for it; {apt}. Minutes:",
        "",
        "| " + " | ".join(r["phases_s"]) + " | total | of the limit |",
        "|" + "---|" * (len(r["phases_s"]) + 2),
        f"| {phases} | **{total_min:.1f} min** | {limit} |",
    ]
    return "\n".join(lines) + "\n"


def summary_row(r: dict[str, Any]) -> str:
    """The BENCHMARKS summary table's row for one host's cold demo (its section: :func:`report_section`)."""
    ph = r["phases_s"]
    install = sum(v for k, v in ph.items() if k.startswith(("sysdeps", "install")))
    parts = f"install {install / 60:.1f}, " + ", ".join(
        f"{name} {ph[name] / 60:.1f}" for name in ("lite heads", "reranker")
    )
    cpu = (r.get("machine") or {}).get("cpu")
    runs = len(r.get("runs") or []) or 1
    return (
        "| cold `make demo`, fresh clone, install and every model included"
        + (f", {cpu}" if cpu else "")
        + f", {'median of ' + str(runs) + ' runs' if runs > 1 else 'one run'} | "
        f"{r['total_s'] / 60:.1f} min "
        f"({parts} min) | **{r['ratio_to_limit']:.2f}** of {r['limit_min']:g} min |"
    )


if __name__ == "__main__":
    main()
