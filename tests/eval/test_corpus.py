"""BEIR corpus indexing: cached vectors go through the one embed-and-write path, once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmrag.eval.corpus import (
    STEADY_MARGIN,
    _Precomputed,
    corpus_chunks,
    corpus_vectors,
    doc_ids,
    index_corpus,
    steady_hits,
)
from mmrag.eval.datasets import BeirDataset
from mmrag.store import QdrantStore
from mmrag.types import Chunk, Hit
from tests.fakes import HashEncoder

CORPUS = {
    "d1": ("Aspirin", "aspirin lowers the risk of stroke"),
    "d2": ("Ibuprofen", "ibuprofen and kidney function"),
    "d3": ("", ""),  # an empty document is indexed under its id (its vector is of the empty text)
}


def _ds(root: Path) -> BeirDataset:
    return BeirDataset(root / "toy", CORPUS, {"q": "aspirin stroke"}, {"q": {"d1": 1}})


def test_index_corpus_writes_the_cached_vectors_once(tmp_path: Path) -> None:
    ds, enc = _ds(tmp_path), HashEncoder(dim=32)
    cache = tmp_path / "cache"
    want = corpus_vectors(enc, ds, cache)  # fills the cache
    calls = enc.text_calls
    with QdrantStore.open(str(tmp_path / "store")) as store:
        assert index_corpus(store, enc, ds, cache) == 3
        assert enc.text_calls == calls  # served from the cache, not encoded again
        assert index_corpus(store, enc, ds, cache) == 3  # already there: nothing written
        vector = store.default_vector or enc.id
        hits = store.search(vector, want[:2], 1)
        assert [[c.metadata["doc_id"] for c, _ in row] for row in hits] == [["d1"], ["d2"]]
    chunks = corpus_chunks(ds)
    assert chunks[2].text == "d3"
    assert doc_ids([Hit(c, 1.0, None, None, None, 1, 1) for c in chunks]) == ["d1", "d2", "d3"]


def test_cached_vectors_are_served_for_their_own_texts_only() -> None:
    enc = HashEncoder(dim=8)
    served = _Precomputed(enc, ["a", "b"], np.eye(2, 8, dtype=np.float32))
    np.testing.assert_array_equal(served.encode_text(["a"]), np.eye(2, 8, dtype=np.float32)[:1])
    with pytest.raises(ValueError, match="corpus order"):
        served.encode_text(["a"])


def _hit(doc: str, fused: float | None, dense: float | None = None) -> Hit:
    chunk = Chunk(f"c-{doc}", "text", "scifact", doc, None, {"doc_id": doc})
    return Hit(chunk, dense, None, fused, None, 1, 1)


def test_steady_hits_ignore_one_ulp_of_score_noise() -> None:
    # Two runs over the same data: a and b tie (same BM25 score, no dense one), c and d are one
    # float32 ulp apart in one run only, in the store's other order.
    tie, cd = np.float32(0.8013770), np.float32(0.5625578)
    up = float(np.nextafter(tie, np.float32(1)))
    run1 = [_hit("x", 1.7), _hit("b", up), _hit("a", float(tie)), _hit("d", float(cd)), _hit("c", float(cd))]
    run2 = [_hit("x", 1.7), _hit("a", up), _hit("b", float(tie)), _hit("c", float(cd)), _hit("d", float(cd))]
    assert doc_ids(run1) != doc_ids(run2)  # the store's order flips the ties
    assert doc_ids(steady_hits(run1, 5)) == doc_ids(steady_hits(run2, 5)) == ["x", "a", "b", "c", "d"]
    assert doc_ids(steady_hits(run1, 3)) == ["x", "a", "b"]  # the cut is made on the steady ranking
    steady = steady_hits(run2, 2)  # the hits, scores kept, renumbered in the steady order
    assert [(h.chunk.id, h.fused, h.ann_rank, h.final_rank) for h in steady] == [
        ("c-x", 1.7, 1, 1),
        ("c-a", up, 2, 2),
    ]
    # Without a fused score the dense one ranks; a hit without either comes last.
    dense = [_hit("n", None), _hit("m", None, dense=0.2), _hit("k", None, dense=0.9)]
    assert doc_ids(steady_hits(dense, 3)) == ["k", "m", "n"]


def test_two_edge_stores_of_one_corpus_mine_the_same_ranking(data_dir: Path, tmp_path: Path) -> None:
    """Two Qdrant Edge stores built from the same SciFact abstracts in one process: BM25 scores that
    differ in the last float32 bit between them (Edge's sum order) leave the steady_hits ranking unchanged."""
    from mmrag.retriever import Retriever

    full = BeirDataset.load(data_dir / "scifact", "train")
    docs = dict(list(full.corpus.items())[:1000])
    qids = sorted(full.queries)[:300]
    ds = BeirDataset(full.root, docs, {q: full.queries[q] for q in qids}, {})
    enc, texts = HashEncoder(dim=32), [full.queries[q] for q in qids]
    rankings, scores = [], []
    for name in ("one", "two"):
        with QdrantStore.open(str(tmp_path / name)) as st:
            index_corpus(st, enc, ds, None)
            pools = Retriever(enc, st, pool=30, hybrid=True, exact=True).search_batch(
                texts, k=30 + STEADY_MARGIN, hybrid=True
            )
        rankings.append([doc_ids(steady_hits(hits, 30)) for hits in pools])
        scores.append({(i, h.chunk.id): h.sparse for i, hits in enumerate(pools) for h in hits})
    assert rankings[0] == rankings[1]
    shared = scores[0].keys() & scores[1].keys()
    noisy = sum(scores[0][k] != scores[1][k] for k in shared)
    # The noise this guards against (Edge 0.x): if it is ever gone, the steady ranking is merely cheap.
    assert noisy > 0, f"no BM25 score differed between the stores over {len(shared)} hits"
