"""int8 scalar quantization against float32 on real, distinct vectors: memory, disk, latency, recall.

Points are real `lite` embeddings of distinct items, so a query's true top 10 is not a near-tie (the
1M figure of `bench_scale.py` tops up 6k real vectors with noise copies, where it is):

* every sentence of the SciFact corpus abstracts (text),
* every Flickr8k caption (text),
* every Flickr8k image and ``--crops`` random crops of each (image: other views of the same photo),
* with ``--windows``: every non-overlapping word window of 5, 6, 8, 10, 12, 16, 20, 24, 32 and 48 words
  of the abstracts (~0.9M more distinct texts: the disk holds ~0.1M sentences and captions, so this is
  what reaches 1M). Windows of different lengths overlap each other, so a query's top 10 can hold
  several windows of one abstract: the run also reports the score ratio (true cosines of the top 10
  found / of the exact top 10) and the median gap between the exact 10th and 11th cosines, which say
  how close to a tie the misses are.

Queries: ``--queries`` SciFact train queries (text tower; they are not in the store). For each
configuration a fresh Qdrant Edge store is built the way ingest builds one and ``optimize()``-d:

* ``float32``: HNSW over the float vectors (the default);
* ``int8``: HNSW over an int8 copy kept in RAM, float vectors on disk, rescored with the originals
  (``SearchOptions(rescore=True)``, and with ``oversampling=2``), and without rescoring.

Per configuration: build seconds, store size on disk, the resident memory a fresh process gains by
opening the store and answering every query (RSS after the queries minus RSS after the imports: what
serving it costs; plus that process's peak RSS), ANN p50/p95 (vector given, no encoding), and
recall@10 against exact float search on the same points. Latencies are medians of ``--repeats`` rounds.

Usage: python benchmarks/bench_quantization.py [--points 100000] [--crops 2] [--queries 300]
       python benchmarks/bench_quantization.py --points 1000000 --crops 3 --windows --threads 2 \
           --out benchmarks/results/quantization_1m.json
(1M on 2 cores: ~27 min of encoding, cached after; ~10 min of builds; ~22 GiB of RAM at peak on a
cold run, ~13 GiB with the vectors cached.)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from machine import run_record

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MMRAG_DATA", REPO.parent / "shared" / "data"))
CACHE = REPO / ".cache" / "bench"
OUT = REPO / "benchmarks" / "results" / "quantization.json"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


WINDOWS = (5, 6, 8, 10, 12, 16, 20, 24, 32, 48)


def real_items(crops: int, windows: bool = False) -> tuple[list[str], list[Any]]:
    """Distinct texts (abstract sentences, captions, word windows) and images (paths, crop specs)."""
    from mmrag.eval.datasets import BeirDataset

    ds = BeirDataset.load(DATA / "scifact", "train")
    sentences, spans = [], []
    for _title, text in ds.corpus.values():
        sentences += [s for s in re.split(r"(?<=[.!?])\s+", text) if len(s.split()) >= 4]
        if windows:
            words = text.split()
            for n in WINDOWS:
                spans += [" ".join(words[i : i + n]) for i in range(0, len(words) - n + 1, n)]
    captions = [
        c for line in (DATA / "flickr8k" / "captions.jsonl").open() for c in json.loads(line)["captions"]
    ]
    texts = list(dict.fromkeys(sentences + captions + spans))  # distinct only
    images = sorted((DATA / "flickr8k" / "images").glob("*.jpg"))
    return texts, [(p, c) for p in images for c in range(crops + 1)]


def neighbours(vecs: np.ndarray[Any, Any], queries: np.ndarray[Any, Any], k: int) -> np.ndarray[Any, Any]:
    """Exact top-k indices by cosine (numpy, in query slices), best first."""
    out, k = [], min(k, len(vecs))
    for start in range(0, len(queries), 32):
        sims = queries[start : start + 32] @ vecs.T
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1)
        out.append(np.take_along_axis(part, order, axis=1))
    return np.concatenate(out)


def closeness(
    vecs: np.ndarray[Any, Any],
    queries: np.ndarray[Any, Any],
    exact: np.ndarray[Any, Any],
    found: list[list[str]],
) -> dict[str, float]:
    """Per query, (sum of the true cosines of the 10 found) / (sum of the exact top 10's): mean and 5th
    percentile (a low p5 with a high mean: a few queries whose misses are far off, not near-ties)."""
    ratios = []
    for q, ids, ex in zip(queries, found, exact, strict=True):
        got = np.array([uuid.UUID(i).int for i in ids], dtype=np.int64)
        ratios.append(float((vecs[got] @ q).sum() / (vecs[ex] @ q).sum()))
    return {"score_ratio": float(np.mean(ratios)), "score_ratio_p5": float(np.percentile(ratios, 5))}


def encode_items(encoder: Any, texts: list[str], images: list[Any]) -> np.ndarray[Any, Any]:
    from PIL import Image

    rng = np.random.default_rng(0)
    vecs = []
    for start in range(0, len(texts), 32768):
        vecs.append(encoder.encode_text(texts[start : start + 32768], batch_size=256))
        log(f"texts {start + len(vecs[-1])}/{len(texts)}")
    for start in range(0, len(images), 256):
        batch = []
        for path, crop in images[start : start + 256]:
            with Image.open(path) as im:
                img = im.convert("RGB")
            if crop:  # a random 50-80% crop: another view of the same photo
                w, h = img.size
                s = rng.uniform(0.5, 0.8)
                cw, ch = int(w * s), int(h * s)
                x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
                img = img.crop((x, y, x + cw, y + ch))
            batch.append(img)
        vecs.append(encoder.encode_image(batch))
        log(f"images {start + len(batch)}/{len(images)}")
    return np.concatenate(vecs).astype(np.float32)


def build(path: Path, vecs: np.ndarray[Any, Any], quantization: str | None) -> float:
    from mmrag.store import QdrantStore
    from mmrag.types import Chunk, VectorSpec

    t = time.perf_counter()
    with QdrantStore.open(str(path), quantization=quantization) as store:
        name = store.ensure_vector(VectorSpec("bench", vecs.shape[1], "bench", "bench-v1", True))
        for start in range(0, len(vecs), 4096):
            part = vecs[start : start + 4096]
            ids = [str(uuid.UUID(int=start + i)) for i in range(len(part))]
            chunks = [Chunk(i, "text", "bench", "bench point", None, {}) for i in ids]
            store.upsert_chunks(chunks, part, name)
        store.optimize()
    return time.perf_counter() - t


SERVE = """
import json, resource, statistics, sys, time
import numpy as np
from mmrag.store import QdrantStore, SearchOptions
path, qfile, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
queries = np.load(qfile)
out = {}
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
before = rss_mb()  # after the imports: the store's own memory is what comes on top
with QdrantStore.open(path) as store:
    name = store.default_vector or next(iter(store.vectors))
    configs = {"default": SearchOptions()}
    if store.quantization:
        configs = {"rescore": SearchOptions(rescore=True), "rescore, oversampling 2": SearchOptions(
            rescore=True, oversampling=2.0), "no rescore": SearchOptions(rescore=False)}
    for label, opt in configs.items():
        rounds = []
        for _ in range(repeats):
            times, found = [], []
            for q in queries:
                t = time.perf_counter()
                res = store.search(name, q[None, :], 10, options=opt)[0]
                times.append(time.perf_counter() - t)
                found.append([c.id for c, _ in res])
            rounds.append((statistics.median(times), float(np.percentile(times, 95))))
        out[label] = {"p50_ms": 1000 * statistics.median(r[0] for r in rounds),
                      "p95_ms": 1000 * statistics.median(r[1] for r in rounds), "found": found}
    out["store_rss_mb"] = rss_mb() - before  # opened store, after every query (pages it touched)
    # Ground truth last: an exact scan reads every float vector, which would count in the RSS above.
    exact = [[c.id for c, _ in r] for r in store.search(name, queries, 10, options=SearchOptions(exact=True))]
    for label in configs:
        found = out[label].pop("found")
        out[label]["recall@10"] = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, found)]))
        out[label]["found"] = found
# VmHWM, not ru_maxrss: Linux carries the parent's peak through fork + exec into ru_maxrss
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
out["peak_rss_mb"] = int(hwm.split()[1]) / 1024
print(json.dumps(out))
"""


def serve(path: Path, queries_file: Path, repeats: int) -> dict[str, Any]:
    """Open the store in a fresh process, answer every query, report latency, recall and peak RSS."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", SERVE, str(path), str(queries_file), str(repeats)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def disk_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=100_000, help="at most this many real vectors")
    ap.add_argument("--crops", type=int, default=2, help="random crops per Flickr8k image")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--windows", action="store_true", help="add word windows of the abstracts (for 1M)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for encoding (serving uses 1)")
    ap.add_argument("--cache", type=Path, default=CACHE, help="where encoded vectors are kept")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from mmrag.encoders import load_encoder
    from mmrag.eval.datasets import BeirDataset

    encoder = load_encoder("lite")
    all_texts, all_images = real_items(args.crops, args.windows)
    # A random subset of --points items (all of them by default), the same in every run.
    n_text = len(all_texts)
    keep = np.sort(np.random.default_rng(0).permutation(n_text + len(all_images))[: args.points])
    texts = [all_texts[i] for i in keep if i < n_text]
    images = [all_images[i - n_text] for i in keep if i >= n_text]
    args.cache.mkdir(parents=True, exist_ok=True)
    flags = f"c{args.crops}" + ("-w" if args.windows else "")
    cache = args.cache / f"quant-{encoder.id}-{flags}-{len(texts)}-{len(images)}.npy"
    if cache.exists():
        vecs = np.load(cache)
    else:
        log(f"encoding {len(texts)} texts and {len(images)} images (cached in {cache})")
        vecs = encode_items(encoder, texts, images)
        np.save(cache, vecs)
    ds = BeirDataset.load(DATA / "scifact", "train")
    queries = encoder.encode_text(list(ds.queries.values())[: args.queries])
    top11 = neighbours(vecs, queries, 11)
    tenth, eleventh = (np.einsum("qd,qd->q", vecs[top11[:, j]], queries) for j in (9, 10))
    result: dict[str, Any] = {
        **run_record(),
        "points": len(vecs),
        "texts": len(texts),
        "images": len(images),
        "windows": args.windows,
        "queries": len(queries),
        "gap_10_11": float(np.median(tenth - eleventh)),  # exact 10th minus 11th cosine, median
        "configs": {},
    }
    with tempfile.TemporaryDirectory(prefix="mmrag-bench-quant-") as tmp:
        qfile = Path(tmp) / "queries.npy"
        np.save(qfile, queries)
        for label, quant in (("float32", None), ("int8", "int8")):
            path = Path(tmp) / label
            seconds = build(path, vecs, quant)
            row = {"build_s": seconds, "disk_mb": disk_mb(path), **serve(path, qfile, args.repeats)}
            for m in row.values():
                if isinstance(m, dict):
                    m.update(closeness(vecs, queries, top11[:, :10], m.pop("found")))
            result["configs"][label] = row
            log(f"{label}: {json.dumps(row)}")
            shutil.rmtree(path)
    result["self_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
