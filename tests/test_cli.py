"""The `mmrag` command end to end with the real `lite` encoder on real files (integration)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mmrag.cli import main

pytestmark = pytest.mark.integration


def _json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict[str, object]:
    code = main([*argv, "--json", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0, out
    result: dict[str, object] = json.loads(out)
    return result


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A small real folder: the DPR paper, another PDF, a README, a text, two photos, a broken file."""
    root = tmp_path_factory.mktemp("docs")
    demo = data_dir / "ingest_demo"
    shutil.copy(demo / "pdf" / "dpr-paper-karpukhin2020.pdf", root)
    shutil.copy(demo / "pdf" / "scanned-table-no-text-layer.pdf", root)
    for sub in ("markdown", "images/photos"):
        for p in sorted((demo / sub).iterdir())[:2]:
            shutil.copy(p, root)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    return root


def test_ingest_search_reingest_info(tmp_path: Path, docs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = str(tmp_path / "store")
    first = _json(capsys, ["ingest", str(docs), "--store", store])
    assert first["embedded"] == first["written"] and int(first["written"]) > 50  # type: ignore[call-overload]
    reasons = {Path(s["path"]).name: s["reason"] for s in first["skipped"]}  # type: ignore[attr-defined]
    from mmrag.ingest import ocr

    # The scan has no text layer: OCR'd where tesseract is installed, else skipped with a reason.
    expected = {"broken.jpg"} if ocr.available() else {"scanned-table-no-text-layer.pdf", "broken.jpg"}
    assert set(reasons) == expected

    res = _json(capsys, ["search", "dense passage retrieval", "--store", store, "--k", "3"])
    hits = res["hits"]
    assert isinstance(hits, list) and len(hits) == 3
    assert all(h["source"].endswith("dpr-paper-karpukhin2020.pdf") for h in hits)
    assert all(h["scores"]["dense"] > 0.3 for h in hits)
    assert [h["final_rank"] for h in hits] == [1, 2, 3]
    assert res["aligned"] is False  # the untrained lite heads are reported honestly

    again = _json(capsys, ["ingest", str(docs), "--store", store])
    assert again["embedded"] == 0 and again["written"] == 0
    assert again["points_in_store"] == first["points_in_store"]

    info = _json(capsys, ["info", "--store", store])
    assert info["points"] == first["points_in_store"]
    assert info["default_vector"] == "lite-untrained-v1"

    images = _json(
        capsys,
        [
            "search",
            "--image",
            str(next(docs.glob("*.jpg"))),
            "--store",
            store,
            "--modality",
            "image",
            "--k",
            "1",
        ],
    )
    assert images["hits"][0]["scores"]["dense"] == pytest.approx(1.0, abs=1e-3)  # type: ignore[index]


def test_cli_errors_are_messages_not_tracebacks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", "--store", str(tmp_path / "empty"), "--quiet"]) == 2
    assert "--image FILE" in capsys.readouterr().err
    assert main(["search", "hello", "--store", str(tmp_path / "empty"), "--quiet"]) == 2
    assert "ingest" in capsys.readouterr().err
    assert main(["ingest", str(tmp_path / "nope"), "--store", str(tmp_path / "s"), "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["eval", "--dataset", str(tmp_path), "--quiet"]) == 2
    assert "error:" in capsys.readouterr().err
    # a distillation weight with nothing to distil from is refused, not silently dropped
    assert main(["train-reranker", "--out", str(tmp_path / "rr"), "--distill", "0.5", "--quiet"]) == 2
    assert "--teacher" in capsys.readouterr().err and not (tmp_path / "rr").exists()


def test_eval_beir_subset(tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A real SciFact slice (40 queries, their relevant docs plus 400 others) through `mmrag eval`."""
    src = data_dir / "scifact"
    qrels_lines = (src / "qrels" / "train.tsv").read_text().splitlines()
    rows = [ln.split("\t") for ln in qrels_lines[1:]]
    qids = sorted({r[0] for r in rows}, key=int)[:40]
    keep_docs = {r[1] for r in rows if r[0] in qids}
    corpus = [json.loads(ln) for ln in (src / "corpus.jsonl").read_text().splitlines()]
    keep_docs |= {d["_id"] for d in corpus[:400]}
    root = tmp_path / "scifact-mini"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in corpus if d["_id"] in keep_docs))
    queries = [json.loads(ln) for ln in (src / "queries.jsonl").read_text().splitlines()]
    (root / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries if q["_id"] in qids))
    (root / "qrels" / "train.tsv").write_text(
        "\n".join([qrels_lines[0], *("\t".join(r) for r in rows if r[0] in qids)])
    )
    report = _json(capsys, ["eval", "--dataset", str(root)])
    metrics = report["metrics"]
    assert report["queries"] == 40 and report["layout"] == "beir"
    # MiniLM is real: a small corpus is easy, so well above chance (which is ~0.01).
    assert metrics["ndcg@10"] > 0.6  # type: ignore[index]
    assert 0 <= metrics["recall@100"] <= 1  # type: ignore[index]
    assert report["pipeline"] == "dense"

    # The whole pipeline and its ablation in one run (the eval gate users run on their own data).
    argv = ["eval", "--dataset", str(root), "--hybrid", "--rerank", "--reranker", "minilm", "--pool", "10"]
    staged = _json(capsys, [*argv, "--stages"])
    stages = staged["stages"]
    assert staged["pipeline"] == "hybrid+rerank" and staged["reranker"]
    assert list(stages) == ["bm25", "dense", "hybrid", "hybrid+rerank", "rerank"]  # type: ignore[arg-type]
    for m in stages.values():  # type: ignore[attr-defined]
        assert {"ndcg@10", "recall@10", "recall@100", "mrr"} <= set(m)
    assert stages["dense"]["ndcg@10"] == pytest.approx(metrics["ndcg@10"])  # type: ignore[index]
    # the pipeline's own metrics are its stage's row
    assert staged["metrics"]["ndcg@10"] == pytest.approx(stages["hybrid+rerank"]["ndcg@10"])  # type: ignore[index]
    assert main([*argv, "--stages"]) == 0
    table = capsys.readouterr().out
    assert "pipeline hybrid+rerank" in table and "stages (one run, same queries):" in table
    assert all(name in table for name in ("bm25", "hybrid+rerank", "Δ nDCG"))
    assert main(["eval", "--dataset", str(root), "--fold", "val", "--quiet"]) == 2  # no triplets beside it
    assert "triplets" in capsys.readouterr().err


def test_eval_image_caption(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = _json(capsys, ["eval", "--dataset", str(data_dir / "skimage_clip8"), "--split", "test"])
    m = report["metrics"]
    assert report["images"] == 8 and report["captions"] == 8
    assert set(m) >= {"t2i_recall@1", "t2i_recall@5", "t2i_recall@10", "i2t_recall@1", "rsum"}  # type: ignore[arg-type]
    assert m["t2i_recall@10"] == 1.0  # only 8 images: all of them are in the top 10  # type: ignore[index]
    staged = _json(
        capsys, ["eval", "--dataset", str(data_dir / "skimage_clip8"), "--split", "test", "--stages"]
    )
    assert staged["stages"] == {"dense": m} and "carry no text" in staged["stages_note"]  # type: ignore[operator]


def test_every_subcommand_takes_the_common_flags() -> None:
    from mmrag.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():  # type: ignore[union-attr]
        flags = {o for a in p._actions for o in a.option_strings}
        assert {"--store", "--model", "--json", "--quiet"} <= flags, name


def test_cli_package_runs_as_a_module() -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "mmrag.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "ingest" in out and "train-reranker" in out
