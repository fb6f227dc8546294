"""The closed loop: mine hard negatives from the live index, train, re-embed beside the old vector,
evaluate both on labelled dev data, and switch the store's default vector only if the new one wins.

``mmrag train --from-store`` runs :func:`closed_loop`. The steps, in order:

1. Load the encoder of the store's default vector (a lite-family checkpoint or ``lite``).
2. **Mine**: embed every train caption with that encoder (from cached tower features), search the
   store's image points with it, and keep the top ``mine_k`` images that are not the caption's own
   image as its hard negatives (one static round, as in ANCE). The negatives are images the index
   really holds, i.e. the confusions users see.
3. **Train** the heads from the store's encoder: the in-batch strategy of ``cfg`` plus, per caption,
   a triplet term against one of its mined negatives; early stopping on the dev split's features.
4. **Re-embed** every point of the store into a new named vector (the new checkpoint's id) beside the
   old one; nothing is deleted.
5. **Evaluate** both vectors through the store itself: each dev caption whose image is in the store is
   a text→image query (Flickr protocol, Recall@1/5/10 over the store's image points).
6. **Decide**: switch the default vector when the new one has the higher text→image Recall@10 (ties:
   the higher R@1+R@5+R@10); otherwise keep the old default and say why. Both vectors stay stored.

The mined negatives come from whatever the store holds. When it holds the dev images, the dev images
are seen as negatives (never their labels) — a transductive use of the index that the report records.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import torch

from mmrag.encoders import load_encoder
from mmrag.encoders.base import vector_spec
from mmrag.encoders.openclip import OpenClipEncoder
from mmrag.errors import ConfigError, StoreError
from mmrag.eval.datasets import ImageCaptionDataset
from mmrag.eval.metrics import first_rank, flickr_recall
from mmrag.ingest.indexing import embed_and_write
from mmrag.store import QdrantStore
from mmrag.store.payload import TRAIN_WRITER
from mmrag.train.features import FeatureCache, tower_key
from mmrag.train.lite import check_lite
from mmrag.train.reports import ClosedLoopReport, LoopOutcome, write_report
from mmrag.train.run import dataset_pairs
from mmrag.train.trainer import HardNegatives, LiteHeads, TrainConfig, train_heads
from mmrag.types import Chunk

if TYPE_CHECKING:
    from mmrag.ingest.ledger_base import IngestLedger

log = logging.getLogger(__name__)
F32 = npt.NDArray[np.float32]
KS = (1, 5, 10)


def _image_key(path: str | Path) -> str:
    """Store payloads keep the path as ingested (relative or absolute): match on the resolved path."""
    return str(Path(path).resolve())


def _store_images(store: QdrantStore) -> dict[str, str]:
    """Resolved image path → point id, for every image point whose file exists."""
    out: dict[str, str] = {}
    for rec in store.iter_records({"modality": "image"}):
        image = rec.payload.get("image")
        if image and Path(image).is_file():
            out[_image_key(image)] = rec.id
    return out


def _search_images(
    store: QdrantStore, vector: str, queries: F32, k: int, batch: int = 512
) -> list[list[str]]:
    """Image paths of the top ``k`` image points for each query row."""
    out: list[list[str]] = []
    for start in range(0, len(queries), batch):
        res = store.search(vector, queries[start : start + batch], k, modality="image")
        out += [[_image_key(c.image) for c, _ in hits if c.image] for hits in res]
    return out


def mine_negatives(
    store: QdrantStore,
    vector: str,
    caption_vectors: F32,
    owners: Sequence[str],
    k: int,
) -> tuple[list[str], npt.NDArray[np.int64], dict[str, Any]]:
    """Hard negatives of each caption from the index: its top-``k`` image hits minus its own image.

    Args:
        store: The live store.
        vector: The named vector to search (the current encoder's).
        caption_vectors: One normalised query vector per caption.
        owners: Resolved path of each caption's own image (its known positive).
        k: How many hits to keep per caption (after dropping the positive).

    Returns:
        The mined image paths, a ``(captions, k)`` index into them (``-1`` pads), and counts.
    """
    if k < 1:
        raise ConfigError(f"mine_k must be >= 1, got {k}")
    hits = _search_images(store, vector, caption_vectors, k + 1)
    paths: dict[str, int] = {}
    index = np.full((len(hits), k), -1, dtype=np.int64)
    dropped = 0
    for n, row in enumerate(hits):
        kept = [p for p in row if p != owners[n]]
        dropped += len(row) - len(kept)
        for j, p in enumerate(kept[:k]):
            index[n, j] = paths.setdefault(p, len(paths))
    stats = {"captions": len(hits), "k": k, "unique_images": len(paths), "positives_dropped": dropped}
    return list(paths), index, stats


def store_recall(
    store: QdrantStore, vector: str, encoder: OpenClipEncoder, ds: ImageCaptionDataset
) -> dict[str, Any]:
    """Text→image Recall@1/5/10 through the store: dev captions as queries, their image the one relevant
    point; captions whose image the store does not hold are left out (and counted). The recall is
    :func:`mmrag.eval.metrics.flickr_recall`, the one ``mmrag eval`` and the trainer use."""
    held = _store_images(store)
    queries: list[str] = []
    targets: list[str] = []
    for image, caps in zip(ds.images, ds.captions, strict=True):
        key = _image_key(image)
        if key in held:
            queries += list(caps)
            targets += [key] * len(caps)
    if not queries:
        raise StoreError(
            f"the store holds none of the {len(ds.images)} images of {ds.root}; the closed loop evaluates "
            "on labelled images that are in the store (ingest them with their captions first)"
        )
    t0 = time.perf_counter()
    qvecs = encoder.encode_text(queries)
    hits = _search_images(store, vector, qvecs, max(KS))
    ranks = [first_rank(row, (t,)) for row, t in zip(hits, targets, strict=True)]
    out: dict[str, Any] = flickr_recall(ranks, ks=KS)
    out.update(queries=len(queries), images_in_store=len(held), seconds=round(time.perf_counter() - t0, 1))
    return out


def _figure_images(source: str, cache: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Decoded figures of a PDF by chunk id (figure chunks have no image file of their own)."""
    if source not in cache:
        from mmrag.errors import MmragError
        from mmrag.ingest.loaders import LoadOptions, load_document

        path = Path(source)
        try:
            cache[source] = load_document(path, path.read_bytes(), opts=LoadOptions(ocr=False)).images
        except (OSError, MmragError) as exc:
            log.warning("cannot re-read figures of %s: %s", source, exc)
            cache[source] = {}
    return cache[source]


def reembed(
    store: QdrantStore, encoder: OpenClipEncoder, vector: str, *, batch: int = 64, progress: bool = True
) -> dict[str, Any]:
    """Embed every point of ``store`` with ``encoder`` into ``vector`` (existing points keep their other
    vectors). Image files are read again; figures extracted from PDFs are re-extracted from their PDF.
    Images that can no longer be read are counted, and their sources listed as incomplete."""
    from tqdm import tqdm

    from mmrag.store import payload_chunk

    done = missing = 0
    total = store.count()
    pending: dict[str, list[tuple[Chunk, Any]]] = {"text": [], "image": []}
    sources: set[str] = set()
    incomplete: set[str] = set()
    figures: dict[str, dict[str, Any]] = {}

    def flush(modality: str) -> None:
        nonlocal done
        items = pending[modality]
        if not items:
            return
        chunks = [c for c, _ in items]
        # Image chunks carry what to embed (the file, or a figure decoded again from its PDF).
        images = {c.id: img for c, img in items} if modality == "image" else None
        done += embed_and_write(
            encoder, store, chunks, vector=vector, images=images, batch=batch, writer=TRAIN_WRITER
        )
        bar.update(len(chunks))
        pending[modality] = []

    with tqdm(total=total, desc="re-embed", unit="pt", disable=not progress, dynamic_ncols=True) as bar:
        for rec in store.iter_records():
            chunk = payload_chunk(rec.id, rec.payload)
            sources.add(chunk.source)
            image: Any = None
            if chunk.modality == "image":
                if chunk.image and Path(chunk.image).is_file():
                    image = chunk.image
                elif chunk.source.lower().endswith(".pdf"):
                    image = _figure_images(chunk.source, figures).get(chunk.id)
                if image is None:
                    missing += 1
                    incomplete.add(chunk.source)
                    bar.update(1)
                    continue
            pending[chunk.modality].append((chunk, image))
            if len(pending[chunk.modality]) >= batch:
                flush(chunk.modality)
        flush("text")
        flush("image")
    return {
        "points": total,
        "reembedded": done,
        "missing_images": missing,
        "complete_sources": sorted(sources - incomplete),
        "incomplete_sources": sorted(incomplete),
    }


def _better(new: dict[str, Any], old: dict[str, Any], min_gain: float = 0.0) -> tuple[bool, str]:
    """Switch when t2i R@10 gains more than ``min_gain`` (with no ``min_gain``, a tie goes to rsum)."""
    key = "t2i_recall@10"
    gain = new[key] - old[key]
    rsums = f"(rsum {new['rsum']:.1f} vs {old['rsum']:.1f})"
    if gain > min_gain or (min_gain == 0 and gain == 0 and new["rsum"] > old["rsum"]):
        return True, f"new {key} {new[key]:.4f} > old {old[key]:.4f} by {gain:+.4f} {rsums}"
    need = f" by more than {min_gain:.4f}" if min_gain else ""
    return False, (
        f"new {key} {new[key]:.4f} is not better than old {old[key]:.4f}{need} {rsums}; "
        "keeping the old default"
    )


def closed_loop(
    store: QdrantStore,
    root: Path,
    out: Path,
    cfg: TrainConfig,
    *,
    base: str | None = None,
    mine_k: int = 10,
    mined_weight: float = 1.0,
    min_gain: float = 0.0,
    train_split: str = "train",
    dev_split: str = "dev",
    cache_dir: Path | None = None,
    limit: int | None = None,
    ledger: IngestLedger | None = None,
    progress: bool = True,
) -> ClosedLoopReport:
    """Mine → train → re-embed into a new vector → evaluate old and new → switch only if better.

    Args:
        store: The live store (its default vector is the starting encoder).
        root: Labelled image-caption dataset: ``train_split`` pairs to train on, ``dev_split`` to decide.
        out: Checkpoint directory for the new encoder (with ``closed_loop.json``).
        cfg: Head-training settings (triplet loss).
        base: Encoder spec to start from (default: the spec of the store's default vector).
        mine_k: Mined negatives kept per train caption.
        mined_weight: Weight of the mined-negative triplet term.

    Returns:
        The report: mining counts, old/new metrics, the decision and its reason, timings
        (``to_dict()`` is ``training_report.json``, ``closed_loop.to_dict()`` is ``closed_loop.json``).
    """
    t0 = time.perf_counter()
    if cfg.unfreeze_blocks:
        raise ConfigError("the closed loop trains the heads only (mined negatives are pooled features)")
    if min_gain < 0:
        raise ConfigError(f"min_gain must be >= 0, got {min_gain}")
    spec = base or store.default_spec
    if not spec:
        raise StoreError(f"store {store.location} is empty: ingest labelled images first")
    old_vector = store.default_vector
    old_enc = load_encoder(spec)
    if not isinstance(old_enc, OpenClipEncoder):
        raise ConfigError(f"the closed loop trains lite-family encoders; {spec!r} is not one")
    check_lite(old_enc)
    old_vector = store.vector_for(vector_spec(old_enc))
    dev_ds = ImageCaptionDataset.load(root, dev_split)
    old_metrics = store_recall(store, old_vector, old_enc, dev_ds)
    log.info("old vector %s on %s: %s", old_vector, dev_split, old_metrics)

    # mine with the current encoder: caption vectors from cached text features through its heads
    cache = FeatureCache(cache_dir or Path(".cache") / "features", progress=progress)
    towers = tower_key(old_enc)
    train = dataset_pairs(old_enc, cache, towers, root, train_split, limit)
    dev = dataset_pairs(old_enc, cache, towers, root, dev_split, limit)
    heads = LiteHeads(old_enc, 0.0).eval()
    with torch.inference_mode():
        cap_vecs = heads.embed_anchor(torch.from_numpy(train.texts)).numpy()
    train_ds = ImageCaptionDataset.load(root, train_split, limit=limit)
    owners = [_image_key(train_ds.images[i]) for i in train.owners]
    t_mine = time.perf_counter()
    paths, index, mine_stats = mine_negatives(store, old_vector, cap_vecs, owners, mine_k)
    mined_features = cache.images(old_enc, [Path(p) for p in paths], towers=towers)
    mine_stats["seconds"] = round(time.perf_counter() - t_mine, 1)
    log.info("mined %s", mine_stats)

    new_enc = load_encoder(spec)  # a fresh copy: training changes its heads in place
    assert isinstance(new_enc, OpenClipEncoder)
    report = train_heads(
        new_enc,
        train,
        dev,
        cfg,
        hard_negatives=HardNegatives(mined_features, index, mined_weight),
        start_competes=False,  # always produce a candidate: the store evaluation below decides
        progress=progress,
    )
    new_enc.save(
        out,
        model_cfg=new_enc.info["model_cfg"],
        extra={
            "training": {**report.summary(), "dataset": str(root), "base": spec, "closed_loop": mine_stats}
        },
    )
    trained = load_encoder(str(out))  # what users will load, not the in-memory copy
    assert isinstance(trained, OpenClipEncoder)
    new_vector = store.ensure_vector(vector_spec(trained))
    if new_vector == old_vector:
        raise ConfigError(
            f"the trained encoder has the same id as the old one ({trained.id}); nothing to compare"
        )
    t_embed = time.perf_counter()
    embed_stats = reembed(store, trained, new_vector, progress=progress)
    complete = embed_stats.pop("complete_sources")
    if ledger is not None:
        ledger.add_vector(complete, new_vector)
    embed_stats["sources"] = len(complete) + len(embed_stats["incomplete_sources"])
    store.optimize()
    embed_info: dict[str, Any] = {**embed_stats, "seconds": round(time.perf_counter() - t_embed, 1)}
    new_metrics = store_recall(store, new_vector, trained, dev_ds)
    switched, reason = _better(new_metrics, old_metrics, min_gain)
    if switched:
        store.set_default_vector(new_vector)
    log.info("closed loop: %s", reason)
    result = ClosedLoopReport(
        heads=report,
        checkpoint=str(out.resolve()),
        base=spec,
        dataset=str(root),
        closed_loop=LoopOutcome(
            store=store.location,
            old_vector=old_vector,
            new_vector=new_vector,
            old=old_metrics,
            new=new_metrics,
            switched=switched,
            reason=reason,
            default_vector=store.default_vector,
            mining={**mine_stats, "weight": mined_weight},
            reembed=embed_info,
            transductive_note="negatives were mined from the store's own images; their labels were not used",
        ),
        wall_seconds=round(time.perf_counter() - t0, 1),
    )
    write_report(result, out)
    (out / "closed_loop.json").write_text(json.dumps(result.closed_loop.to_dict(), indent=2))
    return result


__all__ = ["closed_loop", "mine_negatives", "reembed", "store_recall"]
