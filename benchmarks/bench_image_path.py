"""The image path against the hardware: FLOPs per image, the matmul ceiling, and images/s per step.

Measured in one run, per torch thread count (``--threads``):

* the image tower's FLOPs per image (``torch.utils.flop_counter``, 2 FLOPs per multiply-add);
* the machine's fp32 matmul ceiling with the same threads (a 2048² ``torch.mm``, best of 5);
* end-to-end images/s of ``encode_image`` on file paths (decode + resize + forward, the path ingest,
  training feature caches and image queries share), one step at a time:
  1. ``torch``, full decode (the encoder before #16),
  2. ``torch`` + JPEG draft decoding,
  3. ONNX Runtime + draft, decoding on one thread beside the forward pass (steps 1-3 too),
  4. the same on ``decode_workers`` threads (one per core, up to 4) with ONNX Runtime's idle
     threads spinning (its own default),
  5. the same with idle threads sleeping, leaving the cores to the decoders (the default),
  and the forward pass alone on already decoded tensors (ONNX Runtime), the ceiling of this path;
* parity: min cosine of ONNX Runtime's embeddings to torch's, and of draft to full decoding.

Two image sets: the Flickr8k dev photos as shipped (224×224 JPEGs: decoding is cheap, the forward
pass is everything) and the same photos upscaled 8× to 1792×1792 JPEGs (quality 90) in a temporary
folder, standing for camera photos, where a full decode dominates. Each cell is the median of
``--repeats`` timed passes after a warm-up pass.

Usage: python benchmarks/bench_image_path.py [--images 256] [--threads 1 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import run_record

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MMRAG_DATA", REPO.parent / "shared" / "data"))
RESULTS = REPO / "benchmarks" / "results"


def matmul_ceiling(threads: int, n: int = 2048) -> float:
    """Best-of-5 fp32 GFLOP/s of an n×n matmul on ``threads`` torch threads."""
    import torch

    torch.set_num_threads(threads)
    a = torch.randn(n, n)
    torch.mm(a, a)
    best = 0.0
    for _ in range(5):
        t = time.perf_counter()
        torch.mm(a, a)
        best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def tower_gflop(encoder: Any) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(1, 3, encoder.input_size, encoder.input_size)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        encoder.model.visual(x)
    return float(counter.get_total_flops()) / 1e9


def _rate(fn: Any, n: int, repeats: int) -> float:
    fn()  # warm-up (and the ONNX export + parity check, once)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return n / statistics.median(times)


def run_set(encoder: Any, paths: list[Path], repeats: int) -> tuple[dict[str, float], dict[str, Any]]:
    """images/s of each step on one image set, and the embeddings the parity is computed from."""
    import torch

    def encode() -> Any:
        return encoder.encode_image(paths)

    from mmrag.encoders.onnxrt import FastForward

    rows: dict[str, float] = {}
    vecs: dict[str, Any] = {}
    workers = encoder.decode_workers
    encoder.decode_workers = 1  # the encoder before #16 decoded on one thread beside the forward pass
    encoder.set_runtime("torch")
    encoder.draft_decode = False
    rows["torch, full decode"] = _rate(encode, len(paths), repeats)
    vecs["full"] = encode()
    encoder.draft_decode = True
    rows["torch + draft decode"] = _rate(encode, len(paths), repeats)
    vecs["draft"] = encode()
    encoder.set_runtime("auto")
    rows["ONNX Runtime + draft decode, 1 decode thread"] = _rate(encode, len(paths), repeats)
    encoder.decode_workers = workers
    tower = encoder.model.visual  # ONNX Runtime's own default: idle pool threads spin
    encoder.image_forward = FastForward(tower, runtime="auto", name="image tower", spin=True)
    rows[f"ONNX Runtime + draft decode, {workers} decode threads, spinning pool"] = _rate(
        encode, len(paths), repeats
    )
    encoder.set_runtime("auto")  # the default again: a session whose idle threads sleep
    rows["ONNX Runtime + draft decode (default)"] = _rate(encode, len(paths), repeats)
    vecs["fast"] = encode()
    batch = torch.cat([b for _, b in encoder.image_batches(paths, encoder.batch_size)])

    def forward() -> None:
        with torch.inference_mode():
            for i in range(0, len(batch), 32):
                encoder.image_forward(batch[i : i + 32])

    rows["forward only (ONNX Runtime, decoded)"] = _rate(forward, len(paths), repeats)
    return rows, vecs


def run(
    encoder: Any, sets: dict[str, list[Path]], threads: int, repeats: int, gflop: float
) -> dict[str, Any]:
    import torch

    from mmrag.encoders.onnxrt import min_cosine

    torch.set_num_threads(threads)
    ceiling = matmul_ceiling(threads)
    out: dict[str, Any] = {"threads": threads, "ceiling_gflops": ceiling, "sets": {}}
    for name, paths in sets.items():
        rows, vecs = run_set(encoder, paths, repeats)

        out["sets"][name] = {
            "images": len(paths),
            "images_per_s": rows,
            "share_of_ceiling": {k: v * gflop / ceiling for k, v in rows.items()},
            "speedup": rows["ONNX Runtime + draft decode (default)"] / rows["torch, full decode"],
            "parity_onnx_vs_torch": min_cosine(vecs["fast"], vecs["draft"]),
            "parity_draft_vs_full": min_cosine(vecs["draft"], vecs["full"]),
        }
        steps = ", ".join(f"{k} {v:.1f}/s" for k, v in rows.items())
        print(f"threads {threads} {name}: {steps}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default="lite")
    ap.add_argument("--out", type=Path, default=RESULTS / "image_path.json")
    args = ap.parse_args()
    from PIL import Image

    from mmrag.encoders import load_encoder

    encoder = load_encoder(args.model)
    gflop = tower_gflop(encoder)
    names = (DATA / "flickr8k" / "splits" / "dev.txt").read_text().split()[: args.images]
    small = [DATA / "flickr8k" / "images" / n for n in names]
    with tempfile.TemporaryDirectory(prefix="mmrag-bench-img-") as tmp:
        large = []
        for p in small:
            with Image.open(p) as im:
                big = im.convert("RGB").resize((im.width * 8, im.height * 8), Image.Resampling.BICUBIC)
            large.append(Path(tmp) / p.name)
            big.save(large[-1], quality=90)
        sets = {"Flickr8k dev, 224 px JPEG": small, "same, upscaled to 1792 px JPEG": large}
        runs = [run(encoder, sets, t, args.repeats, gflop) for t in args.threads]
    result = {
        **run_record(),
        "model": encoder.id,
        "gflop_per_image": gflop,
        "decode_workers": encoder.decode_workers,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
