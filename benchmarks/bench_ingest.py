"""Ingest throughput end to end, as a ratio to the raw encoder throughput measured in the same run.

Target (issue "Batch ingestion at scale"): end-to-end / raw-encoder throughput >= 0.9 for images
(Flickr8k dev) and for text chunks (SciFact abstracts).

* images: the first ``--images`` Flickr8k dev images (1,000 = all of dev). Raw: ``encode_image``
  on their paths in batches. End to end: ``IngestRunner`` into a fresh Qdrant Edge store (read,
  check, hash, decode, OCR test, embed, write, ledger), excluding the final HNSW build.
* text: the first ``--abstracts`` SciFact corpus abstracts, each written as one ``.txt`` file in a
  temporary folder (title + abstract, as a user folder would hold them). Raw: ``encode_text`` on the
  exact chunks the ingest produced. End to end: ``IngestRunner`` as above, token-aware chunking.

Each phase runs ``--repeats`` times alternating raw / end-to-end; medians are reported. Peak RSS
of the process is reported too (``ru_maxrss``).

Usage: python benchmarks/bench_ingest.py [--images 200] [--abstracts 500] [--repeats 1] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import machine_info

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MMRAG_DATA", REPO.parent / "shared" / "data"))
TARGET_RATIO = 0.9


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _ingest(encoder: Any, files: list[Path], root: Path, chunking: Any, batch: int) -> tuple[float, Any]:
    from mmrag.ingest import IngestOptions, IngestRunner
    from mmrag.store import QdrantStore

    opts = IngestOptions(batch_size=batch, chunking=chunking, optimize=False)
    with tempfile.TemporaryDirectory(prefix="mmrag-bench-ingest-") as tmp, QdrantStore.open(tmp) as store:
        t = time.perf_counter()
        summary = IngestRunner(encoder, store, opts, progress=False).run([root], files=files)
        return time.perf_counter() - t, summary


def bench_images(encoder: Any, n: int, repeats: int, batch: int) -> dict[str, Any]:
    from mmrag.ingest import ChunkingOptions

    names = (DATA / "flickr8k" / "splits" / "dev.txt").read_text().split()[:n]
    root = DATA / "flickr8k" / "images"
    files = [root / name for name in names]
    encoder.encode_image([str(files[0])])  # warm-up
    raw, e2e = [], []
    summary: Any = None
    for _ in range(repeats):
        t = time.perf_counter()
        encoder.encode_image([str(f) for f in files], batch_size=batch)
        raw.append(len(files) / (time.perf_counter() - t))
        seconds, summary = _ingest(encoder, files, root, ChunkingOptions(), batch)
        assert summary.embedded == len(files), summary.to_dict()
        e2e.append(len(files) / seconds)
    return {
        "items": len(files),
        "unit": "images/s",
        "raw_per_s": round(statistics.median(raw), 2),
        "end_to_end_per_s": round(statistics.median(e2e), 2),
        "ratio": round(statistics.median(e2e) / statistics.median(raw), 3),
        "timings": summary.to_dict()["timings"],
    }


def bench_text(encoder: Any, n: int, repeats: int, batch: int, tmp: Path) -> dict[str, Any]:
    from mmrag.ingest import ChunkingOptions
    from mmrag.ingest.loaders import LoadOptions, iter_files, load_document

    root = tmp / "scifact"
    root.mkdir()
    with (DATA / "scifact" / "corpus.jsonl").open(encoding="utf-8") as fh:
        for i, line in zip(range(n), fh, strict=False):
            doc = json.loads(line)
            (root / f"{i:05d}-{doc['_id']}.txt").write_text(f"{doc['title']}\n\n{doc['text']}\n")
    files = list(iter_files(root))
    chunking = ChunkingOptions.for_encoder(encoder)
    opts = LoadOptions(chunking=chunking)
    texts = [c.text or "" for f in files for c in load_document(f, f.read_bytes(), opts=opts).chunks]
    encoder.encode_text(texts[:8])  # warm-up
    raw, e2e = [], []
    summary: Any = None
    for _ in range(repeats):
        t = time.perf_counter()
        encoder.encode_text(texts, batch_size=batch)
        raw.append(len(texts) / (time.perf_counter() - t))
        seconds, summary = _ingest(encoder, files, root, chunking, batch)
        assert summary.embedded == len(texts), (summary.embedded, len(texts))
        e2e.append(len(texts) / seconds)
    return {
        "files": len(files),
        "items": len(texts),
        "unit": "text chunks/s",
        "chunking": f"{chunking.max_tokens} tokens ({chunking.tokenizer_id}), overlap {chunking.overlap}",
        "raw_per_s": round(statistics.median(raw), 2),
        "end_to_end_per_s": round(statistics.median(e2e), 2),
        "ratio": round(statistics.median(e2e) / statistics.median(raw), 3),
        "timings": summary.to_dict()["timings"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="lite")
    ap.add_argument("--images", type=int, default=200, help="Flickr8k dev images (1000 = all)")
    ap.add_argument("--abstracts", type=int, default=500, help="SciFact abstracts (5183 = all)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "ingest.json")
    args = ap.parse_args()

    from mmrag.encoders import load_encoder, set_threads

    set_threads(args.threads)
    encoder = load_encoder(args.model)
    result: dict[str, Any] = {
        "model": args.model,
        "encoder": encoder.id,
        "threads": args.threads,
        "batch": args.batch,
        "repeats": args.repeats,
        "target_ratio": TARGET_RATIO,
        "machine": machine_info(),
    }
    result["images"] = bench_images(encoder, args.images, args.repeats, args.batch)
    print(f"images: {result['images']}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="mmrag-bench-text-") as tmp:
        result["text"] = bench_text(encoder, args.abstracts, args.repeats, args.batch, Path(tmp))
    print(f"text: {result['text']}", file=sys.stderr)
    result["peak_rss_mb"] = round(_rss_mb(), 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
