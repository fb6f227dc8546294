"""Peak memory of a large ingest, and whether it stays flat in the number of files (issue #5).

Target: peak RSS while ingesting `ingest_demo` + 7,000 Flickr8k images (train + dev, the test split
is kept back) <= 3 GB, and flat in the number of files (the runner streams: a bounded window of
files in flight, batches written as they fill).

One `IngestRunner` run into a fresh Qdrant Edge store, with `mmrag ingest`'s defaults (index built
at the end). The process's resident memory (VmRSS) is sampled every ``--every`` files through the
runner's progress callback; the peak is the kernel's high-water mark (VmHWM). "Flat" is judged by
the slope of RSS over the second half of the files (MB per 1,000 files) against the RSS itself, and
by the peak during the first half against the peak of the whole run.

Usage: python benchmarks/bench_ingest_rss.py [--images 7000] [--every 250] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from machine import machine_info

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MMRAG_DATA", REPO.parent / "shared" / "data"))
LIMIT_MB = 3000.0


def status_mb(key: str) -> float:
    with open("/proc/self/status") as fh:
        line = next(ln for ln in fh if ln.startswith(key))
    return int(line.split()[1]) / 1024.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=7000, help="Flickr8k train + dev images (7000 = all)")
    ap.add_argument("--every", type=int, default=250, help="sample RSS every N files")
    ap.add_argument("--model", default="lite")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "ingest_rss.json")
    args = ap.parse_args()

    from mmrag.encoders import load_encoder, set_threads
    from mmrag.ingest import IngestOptions, IngestRunner, read_captions
    from mmrag.ingest.loaders import iter_files
    from mmrag.store import QdrantStore

    set_threads(args.threads)
    flickr = DATA / "flickr8k"
    names = [
        n for split in ("train", "dev") for n in (flickr / "splits" / f"{split}.txt").read_text().split()
    ][: args.images]
    demo = DATA / "ingest_demo"
    files = [*iter_files(demo), *(flickr / "images" / n for n in names)]
    captions = read_captions(flickr / "captions.jsonl")
    encoder = load_encoder(args.model)
    rss_model = status_mb("VmRSS")
    samples: list[tuple[int, float]] = [(0, rss_model)]

    def on_progress(done: int, total: int) -> None:
        if done % args.every == 0 or done == total:
            samples.append((done, status_mb("VmRSS")))
            print(
                f"[{time.strftime('%H:%M:%S')}] {done}/{total} files, RSS {samples[-1][1]:.0f} MB",
                file=sys.stderr,
                flush=True,
            )

    with tempfile.TemporaryDirectory(prefix="mmrag-bench-rss-") as tmp, QdrantStore.open(tmp) as store:
        # Files from two roots: ingest_demo's under its folder, the images under theirs.
        runner = IngestRunner(encoder, store, IngestOptions(), progress=False)
        t = time.perf_counter()
        first = runner.run([demo], files=files[: len(files) - len(names)], on_progress=on_progress)
        base = len(files) - len(names)

        def on_images(done: int, total: int) -> None:
            on_progress(base + done, base + total)

        second = runner.run([flickr / "images"], files=files[base:], captions=captions, on_progress=on_images)
        seconds = time.perf_counter() - t
        points = store.count()
    peak = status_mb("VmHWM")
    n_files = len(files)
    half = [(f, r) for f, r in samples if f >= n_files // 2]
    slope = (
        float(np.polyfit([f for f, _ in half], [r for _, r in half], 1)[0] * 1000) if len(half) > 2 else 0.0
    )
    first_half_peak = max(r for f, r in samples if f <= n_files // 2)
    result: dict[str, Any] = {
        "machine": machine_info(),
        "encoder": encoder.id,
        "threads": args.threads,
        "files": n_files,
        "images": len(names),
        "points": points,
        "seconds": round(seconds, 1),
        "summaries": [first.to_dict(), second.to_dict()],
        "rss_after_model_mb": round(rss_model, 1),
        "samples": samples,
        "peak_rss_mb": round(peak, 1),
        "peak_ratio_to_3gb": round(peak / LIMIT_MB, 3),
        "first_half_sampled_peak_mb": round(first_half_peak, 1),
        "slope_mb_per_1000_files_second_half": round(slope, 2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k not in ("samples", "summaries")}, indent=2))


if __name__ == "__main__":
    main()
