"""BEIR corpus indexing: cached vectors go through the one embed-and-write path, once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmrag.eval.corpus import _Precomputed, corpus_chunks, corpus_vectors, doc_ids, index_corpus
from mmrag.eval.datasets import BeirDataset
from mmrag.store import QdrantStore
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
    from mmrag.types import Hit

    assert doc_ids([Hit(c, 1.0, None, None, None, 1, 1) for c in chunks]) == ["d1", "d2", "d3"]


def test_cached_vectors_are_served_for_their_own_texts_only() -> None:
    enc = HashEncoder(dim=8)
    served = _Precomputed(enc, ["a", "b"], np.eye(2, 8, dtype=np.float32))
    np.testing.assert_array_equal(served.encode_text(["a"]), np.eye(2, 8, dtype=np.float32)[:1])
    with pytest.raises(ValueError, match="corpus order"):
        served.encode_text(["a"])
