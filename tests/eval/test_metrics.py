"""Ranking metrics on toy examples computed by hand."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest

from mmrag.eval import metrics
from mmrag.eval.metrics import evaluate, mrr, ndcg_at_k, recall_at_k

# q1: two relevant docs, one found at rank 1, one at rank 3.
# q2: graded relevance, found at ranks 1 and 3 (see the nDCG test).
# q3: a query with no hits at all.
QRELS = {
    "q1": {"a": 1, "b": 1},
    "q2": {"a": 3, "b": 2, "c": 1},
    "q3": {"z": 1},
}
RUN = {
    "q1": ["a", "x", "b"],
    "q2": ["b", "x", "a", "c"],
    "q3": ["x", "y"],
}


def test_recall_by_hand() -> None:
    # q1: 1/2, q2: b only -> 1/3, q3: 0
    assert recall_at_k(QRELS, RUN, 1) == pytest.approx((1 / 2 + 1 / 3 + 0) / 3)
    # q1: a, b -> 1; q2: b, a -> 2/3; q3: 0
    assert recall_at_k(QRELS, RUN, 3) == pytest.approx((1 + 2 / 3 + 0) / 3)


def test_k_larger_than_list_uses_whole_list() -> None:
    assert recall_at_k(QRELS, RUN, 100) == pytest.approx((1 + 1 + 0) / 3)
    assert ndcg_at_k(QRELS, RUN, 100) == pytest.approx(ndcg_at_k(QRELS, RUN, 4))


def test_ndcg_graded_linear_gain() -> None:
    q2 = {"q2": QRELS["q2"]}
    # run b(2), x(0), a(3): DCG = 2/log2(2) + 0/log2(3) + 3/log2(4) = 2 + 0 + 1.5
    dcg = 2 / math.log2(2) + 3 / math.log2(4)
    # ideal a(3), b(2), c(1)
    idcg = 3 / math.log2(2) + 2 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(q2, RUN, 3) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(q2, RUN, 3) == pytest.approx(0.735006, abs=1e-6)
    # k=1: DCG 2, ideal 3 (linear gain; exponential 2**rel-1 would give 3/7)
    assert ndcg_at_k(q2, RUN, 1) == pytest.approx(2 / 3)


def test_ndcg_ideal_counts_unretrieved_relevant_docs() -> None:
    # Only one of two relevant docs retrieved, at rank 1: DCG 1, ideal 1 + 1/log2(3).
    assert ndcg_at_k({"q": {"a": 1, "b": 1}}, {"q": ["a"]}, 10) == pytest.approx(1 / (1 + 1 / math.log2(3)))


def test_ndcg_perfect_and_no_hits() -> None:
    assert ndcg_at_k({"q": {"a": 2, "b": 1}}, {"q": ["a", "b", "x"]}, 10) == pytest.approx(1.0)
    assert ndcg_at_k({"q3": QRELS["q3"]}, RUN, 10) == 0.0


def test_mrr_by_hand() -> None:
    # q1: rank 1, q2: rank 1, q3: none
    assert mrr(QRELS, RUN) == pytest.approx((1 + 1 + 0) / 3)
    qrels = {"q": {"c": 1}}
    assert mrr(qrels, {"q": ["x", "y", "c"]}) == pytest.approx(1 / 3)
    assert mrr(qrels, {"q": ["x", "y", "c"]}, k=2) == 0.0
    assert mrr(qrels, {"q": ["x", "y", "c"]}, k=3) == pytest.approx(1 / 3)


def test_missing_query_in_run_counts_as_zero() -> None:
    run = {"q1": ["a", "b"]}
    assert recall_at_k(QRELS, run, 10) == pytest.approx(1 / 3)
    assert ndcg_at_k(QRELS, run, 10) == pytest.approx(1 / 3)
    assert mrr(QRELS, run) == pytest.approx(1 / 3)


def test_run_queries_outside_qrels_are_ignored() -> None:
    run = {**RUN, "extra": ["a"]}
    assert evaluate(QRELS, run) == evaluate(QRELS, RUN)


def test_queries_without_positive_judgment_are_left_out() -> None:
    qrels = {"q1": {"a": 1}, "neg": {"a": 0, "b": -1}}
    assert recall_at_k(qrels, {"q1": ["a"]}, 1) == 1.0
    with pytest.raises(ValueError, match="no query with a relevant"):
        recall_at_k({"neg": {"a": 0}}, {"neg": ["a"]}, 1)
    with pytest.raises(ValueError, match="no query with a relevant"):
        evaluate({}, {})


def test_repeated_doc_counts_once() -> None:
    qrels = {"q": {"a": 1, "b": 1}}
    assert recall_at_k(qrels, {"q": ["a", "a", "b"]}, 2) == pytest.approx(1.0)
    assert ndcg_at_k(qrels, {"q": ["a", "a"]}, 2) <= 1.0


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="positive integer"):
        recall_at_k(QRELS, RUN, 0)
    with pytest.raises(ValueError, match="positive integer"):
        mrr(QRELS, RUN, k=0)
    with pytest.raises(TypeError, match="sequence of doc ids"):
        recall_at_k({"q": {"a": 1}}, {"q": "abc"}, 1)
    with pytest.raises(ValueError, match="at least one cut-off"):
        evaluate(QRELS, RUN, ks=())


def test_evaluate_keys_and_values() -> None:
    out = evaluate(QRELS, RUN, ks=(10, 1, 5, 1))
    assert list(out) == ["ndcg@1", "recall@1", "ndcg@5", "recall@5", "ndcg@10", "recall@10", "mrr"]
    assert out["recall@1"] == recall_at_k(QRELS, RUN, 1)
    assert out["ndcg@10"] == ndcg_at_k(QRELS, RUN, 10)
    assert out["mrr"] == mrr(QRELS, RUN)
    assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in out.values())
    assert set(evaluate(QRELS, RUN)) == {
        "ndcg@1",
        "ndcg@5",
        "ndcg@10",
        "recall@1",
        "recall@5",
        "recall@10",
        "mrr",
    }


def test_matches_pytrec_eval_when_installed() -> None:
    pytrec_eval = pytest.importorskip("pytrec_eval")
    # Every qrels query is in the run, so pytrec_eval's "drop missing queries" does not differ.
    run_scores = {q: {d: float(len(docs) - i) for i, d in enumerate(docs)} for q, docs in RUN.items()}
    res = pytrec_eval.RelevanceEvaluator(QRELS, {"ndcg_cut.3,10", "recall.3,10", "recip_rank"}).evaluate(
        run_scores
    )
    for name, ours in [("ndcg_cut_3", ndcg_at_k(QRELS, RUN, 3)), ("recall_10", recall_at_k(QRELS, RUN, 10))]:
        assert ours == pytest.approx(sum(r[name] for r in res.values()) / len(res))
    assert mrr(QRELS, RUN) == pytest.approx(sum(r["recip_rank"] for r in res.values()) / len(res))


def test_docstring_examples() -> None:
    failures, _ = doctest.testmod(metrics)
    assert failures == 0


def test_flickr_recall_is_recall_and_success_from_ranks() -> None:
    """The one image-caption recall agrees exactly with the qrels/run metrics it replaces."""
    rng = np.random.default_rng(1)
    owners = np.repeat(np.arange(12), 3)
    ranked_images = [[str(j) for j in rng.permutation(12)[:10]] for _ in owners]
    caption_ids = [f"c{n}" for n in range(len(owners))]
    ranked_captions = [[caption_ids[j] for j in rng.permutation(len(owners))[:10]] for _ in range(12)]
    own = [{caption_ids[n] for n in np.flatnonzero(owners == i)} for i in range(12)]
    t2i = [metrics.first_rank(r, {str(o)}) for r, o in zip(ranked_images, owners, strict=True)]
    i2t = [metrics.first_rank(r, own[i]) for i, r in enumerate(ranked_captions)]
    got = metrics.flickr_recall(t2i, i2t)
    t2i_qrels = {str(n): {str(o): 1} for n, o in enumerate(owners)}
    i2t_qrels = {str(i): dict.fromkeys(own[i], 1) for i in range(12)}
    for k in (1, 5, 10):
        t2i_run = {str(n): r for n, r in enumerate(ranked_images)}
        assert got[f"t2i_recall@{k}"] == recall_at_k(t2i_qrels, t2i_run, k)
        assert got[f"i2t_recall@{k}"] == metrics.success_at_k(
            i2t_qrels, {str(i): r for i, r in enumerate(ranked_captions)}, k
        )
    assert list(got) == [f"{d}_recall@{k}" for k in (1, 5, 10) for d in ("t2i", "i2t")] + ["rsum"]
    assert got["rsum"] == 100 * sum(v for key, v in got.items() if key != "rsum")
    only_t2i = metrics.flickr_recall(t2i)
    assert list(only_t2i) == ["t2i_recall@1", "t2i_recall@5", "t2i_recall@10", "rsum"]
    assert metrics.first_rank(["a", "b"], {"z"}) == metrics.NOT_FOUND
    assert metrics.flickr_recall([metrics.NOT_FOUND], ks=(10,))["t2i_recall@10"] == 0.0
    with pytest.raises(ValueError):
        metrics.flickr_recall([])
    with pytest.raises(ValueError):
        metrics.flickr_recall([0], ks=(0,))
