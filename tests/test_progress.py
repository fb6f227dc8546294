"""Every command that can run for more than a few seconds shows progress on stderr (a tqdm bar or a
status line), and ``--quiet`` / ``--json`` keep stderr free of it. Tiny inputs: the real ``lite``
encoder (loaded once per process) on a handful of files, two queries, eight images.

Which command shows what (the audit of issue #17, item 8):

==========================  ==========================================================
ingest                      "loading encoder …", the ``ingest`` bar (files), "building
                            the store's index (optimize)", "rebuilding … quantization"
verify [--repair]           the ``verify`` bar (points)
search                      "loading encoder …" (and the reranker)
eval                        "loading encoder …", ``index`` bars, the ``search`` bar
                            (queries), ``rerank stages`` with ``--stages``
train [--from-store]        ``image features`` / ``text features`` / epoch bars
train-reranker              tests/train/test_reranker_train.py (index, mine, train,
                            validate bars)
model-set --reranker        "loading reranker … to check it"
info, ui, serve             nothing: info is instant; the servers log as servers
==========================  ==========================================================
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mmrag.cli import main

pytestmark = pytest.mark.integration

# What a tqdm bar or a status line leaves on stderr; a run under --quiet / --json leaves none of it.
PROGRESS = re.compile(r"\d+%\||\d+(\.\d+)?(it|file|pt|query|chunk|img|text|step)/s|^mmrag: ", re.M)


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("docs")
    (root / "a.txt").write_text("dense passage retrieval embeds questions and passages")
    (root / "b.md").write_text("# Cats\n\nCats sleep on warm windows all afternoon.\n")
    (root / "c.txt").write_text("qdrant stores vectors with payload indexes")
    return root


@pytest.fixture(scope="module")
def beir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("beir")
    docs = {
        "d1": "dense retrieval of passages",
        "d2": "cats on windows",
        "d3": "vector databases",
        "d4": "bm25",
    }
    (root / "corpus.jsonl").write_text(
        "\n".join(json.dumps({"_id": k, "title": "", "text": v}) for k, v in docs.items())
    )
    queries = {"q1": "passage retrieval", "q2": "where do cats sleep"}
    (root / "queries.jsonl").write_text(
        "\n".join(json.dumps({"_id": k, "text": v}) for k, v in queries.items())
    )
    (root / "qrels").mkdir()
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n")
    return root


def _run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """stderr of ``mmrag argv`` (which must succeed)."""
    capsys.readouterr()
    assert main(argv) == 0, capsys.readouterr().err
    return capsys.readouterr().err


def _quiet(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    for flag in ("--json", "--quiet"):
        err = _run(capsys, [*argv, flag])
        assert not PROGRESS.search(err), f"{argv[0]} {flag} printed progress:\n{err}"


def test_ingest_verify_search_show_progress(
    docs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ["--store", str(tmp_path / "store")]
    err = _run(capsys, ["ingest", str(docs), *store])
    assert "mmrag: loading encoder lite" in err
    assert re.search(r"ingest: +100%\|", err) and "building the store's index" in err
    (docs / "d.txt").write_text("one more file, so the quiet runs write and optimize too")
    _quiet(capsys, ["ingest", str(docs), *store])

    err = _run(capsys, ["verify", *store])
    assert re.search(r"verify: +100%\|.*[45]/[45]", err)
    assert re.search(r"verify: +100%\|", _run(capsys, ["verify", "--repair", *store]))
    _quiet(capsys, ["verify", *store])
    _quiet(capsys, ["verify", "--repair", *store])

    assert "mmrag: loading encoder lite" in _run(capsys, ["search", "cats", *store])
    _quiet(capsys, ["search", "cats", *store])


def test_eval_shows_index_search_and_stage_bars(beir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["eval", "--dataset", str(beir)]
    err = _run(capsys, [*argv, "--hybrid", "--rerank", "--reranker", "minilm", "--stages"])
    assert "mmrag: loading encoder lite" in err and "mmrag: loading reranker minilm" in err
    for bar in ("index", "search", "rerank stages"):
        assert re.search(rf"{bar}: +100%\|", err), f"no {bar!r} bar:\n{err}"
    _quiet(capsys, argv)


def test_train_shows_feature_and_epoch_bars(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--dataset", str(data_dir / "flickr8k"), "--limit", "8", "--epochs", "1"]
    argv += ["--train-batch", "8", "--cache", str(tmp_path / "cache")]
    err = _run(capsys, [*argv, "--out", str(tmp_path / "a")])
    for bar in ("image features", "text features"):
        assert re.search(rf"{bar}: +100%\|", err), f"no {bar!r} bar:\n{err}"
    assert PROGRESS.search(err)
    _quiet(capsys, [*argv, "--out", str(tmp_path / "b")])
