"""Hybrid fusion math on plain lists, and agreement with Qdrant Edge's own prefetch fusion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmrag.errors import ConfigError
from mmrag.retriever.fusion import dbsf, dbsf_normalize, fuse, rrf


def test_rrf_by_hand() -> None:
    s = rrf([["a", "b", "c"], ["c", "a"]], k=2)
    # a: 1/(2+0) + 1/(2+1); b: 1/(2+1); c: 1/(2+2) + 1/(2+0)
    assert s == pytest.approx({"a": 0.5 + 1 / 3, "b": 1 / 3, "c": 0.25 + 0.5})
    w = rrf([["a"], ["b"]], k=1, weights=[3.0, 1.0])
    assert w == {"a": 3.0, "b": 1.0}
    with pytest.raises(ConfigError):
        rrf([["a"]], k=0)
    with pytest.raises(ConfigError):
        rrf([["a"], ["b"]], weights=[1.0])


def test_dbsf_by_hand() -> None:
    n = dbsf_normalize({"a": 1.0, "b": 2.0, "c": 3.0})  # mean 2, sample sd 1 -> [-1, 5]
    assert n == pytest.approx({"a": 2 / 6, "b": 3 / 6, "c": 4 / 6})
    assert dbsf_normalize({"a": 7.0}) == {"a": 0.5} and dbsf_normalize({}) == {}
    fused = dbsf([{"a": 1.0, "b": 2.0, "c": 3.0}, {"a": 10.0}])
    assert fused == pytest.approx({"a": 2 / 6 + 0.5, "b": 0.5, "c": 4 / 6})


def test_fuse_orders_and_breaks_ties_deterministically() -> None:
    dense = [("a", 0.9), ("b", 0.8)]
    sparse = [("b", 12.0), ("a", 3.0)]
    out = fuse([dense, sparse], "rrf", k=60)
    assert [d for d, _ in out] == ["a", "b"] and out[0][1] == out[1][1]  # tie -> first seen first
    assert [d for d, _ in fuse([dense, sparse], "dbsf")] == ["b", "a"]
    with pytest.raises(ConfigError):
        fuse([dense], "max")  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["rrf", "dbsf"])
def test_matches_qdrant_edge_prefetch_fusion(tmp_path: Path, method: str) -> None:
    import qdrant_edge as qe

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(60, 8)), rng.normal(size=(60, 8))
    params = qe.EdgeVectorParams(size=8, distance=qe.Distance.Cosine)
    shard = qe.EdgeShard.create(str(tmp_path), qe.EdgeConfig(vectors={"a": params, "b": params}))
    shard.update(
        qe.UpdateOperation.upsert_points(
            [qe.Point(i, {"a": a[i].tolist(), "b": b[i].tolist()}, {}) for i in range(60)]
        )
    )
    qa, qb = rng.normal(size=8).tolist(), rng.normal(size=8).tolist()

    def nearest(v: list[float], using: str, limit: int) -> list[tuple[str, float]]:
        res = shard.query(qe.QueryRequest(limit=limit, query=qe.Query.Nearest(v, using=using)))
        return [(str(p.id), float(p.score)) for p in res]

    query = qe.Fusion.Rrf(k=60) if method == "rrf" else qe.Fusion.Dbsf()
    prefetches = [
        qe.Prefetch(limit=20, query=qe.Query.Nearest(qa, using="a")),
        qe.Prefetch(limit=12, query=qe.Query.Nearest(qb, using="b")),
    ]
    theirs = {
        str(p.id): p.score for p in shard.query(qe.QueryRequest(limit=40, prefetches=prefetches, query=query))
    }
    ours = dict(fuse([nearest(qa, "a", 20), nearest(qb, "b", 12)], method, k=60))  # type: ignore[arg-type]
    shard.close()
    assert set(ours) == set(theirs)
    assert ours == pytest.approx(theirs, rel=1e-4)
