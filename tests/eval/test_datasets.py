"""Dataset readers on the shared data and on small broken folders."""

from __future__ import annotations

import doctest
import json
from pathlib import Path

import pytest

from mmrag.errors import DatasetError
from mmrag.eval import datasets
from mmrag.eval.datasets import BeirDataset, ImageCaptionDataset, detect_layout, scifact_val_query_ids

# ---------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def scifact(data_dir: Path) -> BeirDataset:
    return BeirDataset.load(data_dir / "scifact", "train")


def test_scifact_train_counts(scifact: BeirDataset) -> None:
    assert len(scifact.corpus) == 5183
    assert len(scifact.queries) == 809
    assert set(scifact.qrels) == set(scifact.queries)
    assert sum(len(docs) for docs in scifact.qrels.values()) == 919
    assert all(rel > 0 for docs in scifact.qrels.values() for rel in docs.values())
    # every judged doc is in the corpus, so recall 1 is reachable
    assert all(doc in scifact.corpus for docs in scifact.qrels.values() for doc in docs)


def test_scifact_doc_text_joins_title_and_text(scifact: BeirDataset) -> None:
    title, text = scifact.corpus["4983"]
    assert title.startswith("Microstructural development")
    assert scifact.doc_text("4983") == f"{title} {text}"
    assert scifact.queries["0"] == "0-dimensional biomaterials lack inductive properties."
    with pytest.raises(KeyError):
        scifact.doc_text("no-such-doc")


def test_scifact_val_fold(data_dir: Path, scifact: BeirDataset) -> None:
    val = scifact_val_query_ids(data_dir / "triplets" / "scifact_train_triplets.jsonl")
    assert val is not None
    assert len(val) == 71
    assert val <= set(scifact.qrels)
    ds = BeirDataset.load(data_dir / "scifact", "train", query_ids=sorted(val))
    assert set(ds.queries) == val == set(ds.qrels)
    assert len(ds.corpus) == 5183


def test_scifact_unknown_query_ids_and_split(data_dir: Path) -> None:
    with pytest.raises(DatasetError, match="no positive judgment"):
        BeirDataset.load(data_dir / "scifact", "train", query_ids=["0", "not-a-query"])
    with pytest.raises(DatasetError, match="available splits: train"):
        BeirDataset.load(data_dir / "scifact", "test")


@pytest.fixture(scope="module")
def flickr_dev(data_dir: Path) -> ImageCaptionDataset:
    return ImageCaptionDataset.load(data_dir / "flickr8k", "dev")


def test_flickr8k_dev(data_dir: Path, flickr_dev: ImageCaptionDataset) -> None:
    assert len(flickr_dev) == len(flickr_dev.images) == 1000
    assert len(flickr_dev.captions) == 1000
    assert all(len(caps) == 5 for caps in flickr_dev.captions)
    dev_names = (data_dir / "flickr8k" / "splits" / "dev.txt").read_text().split()
    assert {p.name for p in flickr_dev.images} == set(dev_names)
    assert flickr_dev.images[0] == data_dir / "flickr8k" / "images" / "1022454332_6af2c1449a.jpg"
    assert flickr_dev.captions[0][2] == "A little boy at a lake watching a duck ."
    texts, owners = flickr_dev.flat_captions()
    assert len(texts) == len(owners) == 5000
    assert owners[:6] == [0, 0, 0, 0, 0, 1]


def test_flickr8k_limit(data_dir: Path) -> None:
    ds = ImageCaptionDataset.load(data_dir / "flickr8k", "train", limit=10)
    assert len(ds) == 10
    with pytest.raises(ValueError, match="limit"):
        ImageCaptionDataset.load(data_dir / "flickr8k", "train", limit=0)


def test_skimage_clip8(data_dir: Path) -> None:
    root = data_dir / "skimage_clip8"
    ds = ImageCaptionDataset.load(root, split=None)
    assert len(ds) == 8
    assert all(len(caps) == 1 for caps in ds.captions)
    assert {p.stem for p in ds.images} >= {"astronaut", "chelsea", "coffee", "rocket"}
    assert len(ImageCaptionDataset.load(root, "test")) == 8
    with pytest.raises(DatasetError, match="splits found: test"):
        ImageCaptionDataset.load(root, "dev")


def test_detect_layout_on_real_data(data_dir: Path) -> None:
    assert detect_layout(data_dir / "scifact") == "beir"
    assert detect_layout(data_dir / "flickr8k") == "image-caption"
    assert detect_layout(data_dir / "skimage_clip8") == "image-caption"


# ---------------------------------------------------------------- broken and minimal folders


def _write_jsonl(path: Path, rows: list[object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _mini_beir(root: Path, qrels: str) -> Path:
    _write_jsonl(
        root / "corpus.jsonl",
        [{"_id": "d1", "title": "T", "text": "one"}, {"_id": "d2", "text": "two"}],
    )
    _write_jsonl(root / "queries.jsonl", [{"_id": "q1", "text": "first"}, {"_id": "q2", "text": "second"}])
    (root / "qrels").mkdir(exist_ok=True)
    (root / "qrels" / "train.tsv").write_text(qrels, encoding="utf-8")
    return root


def test_detect_layout_on_junk(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("junk")
    (tmp_path / "corpus.jsonl").write_text("{}\n")
    with pytest.raises(DatasetError, match=r"missing: queries\.jsonl, qrels/") as info:
        detect_layout(tmp_path)
    assert "captions.jsonl" in str(info.value)
    with pytest.raises(DatasetError, match="not a folder"):
        detect_layout(tmp_path / "nope")


def test_beir_minimal_filters_qrels(tmp_path: Path) -> None:
    # header-less, a zero score, and a judgment for a query that does not exist
    root = _mini_beir(tmp_path, "q1\td1\t2\nq1\td2\t0\nq2\td2\t0\nq9\td1\t1\n")
    ds = BeirDataset.load(root)
    assert dict(ds.queries) == {"q1": "first"}
    assert ds.qrels == {"q1": {"d1": 2}}
    assert ds.doc_text("d1") == "T one"
    assert ds.doc_text("d2") == "two"  # no title: no leading space


@pytest.mark.parametrize(
    ("qrels", "message"),
    [
        ("query-id\tcorpus-id\tscore\nq1\td1\thigh\n", r"train\.tsv:2: score 'high'"),
        ("query-id\tcorpus-id\tscore\nq1 d1 1\n", r"train\.tsv:2: expected 3 tab-separated"),
        ("query-id\tcorpus-id\tscore\nq9\td1\t1\n", "no query of .* has a positive judgment"),
    ],
)
def test_beir_bad_qrels(tmp_path: Path, qrels: str, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        BeirDataset.load(_mini_beir(tmp_path, qrels))


def test_beir_bad_rows(tmp_path: Path) -> None:
    root = _mini_beir(tmp_path, "q1\td1\t1\n")
    with (root / "corpus.jsonl").open("a") as fh:
        fh.write("{not json\n")
    with pytest.raises(DatasetError, match=r"corpus\.jsonl:3: not valid JSON.*BEIR layout"):
        BeirDataset.load(root)
    _write_jsonl(root / "corpus.jsonl", [{"_id": "d1", "title": "x"}])
    with pytest.raises(DatasetError, match=r"corpus\.jsonl:1: field 'text' is missing"):
        BeirDataset.load(root)
    _write_jsonl(root / "corpus.jsonl", [{"_id": "d1", "text": "a"}, {"_id": "d1", "text": "b"}])
    with pytest.raises(DatasetError, match=r"corpus\.jsonl:2: doc id 'd1' appears twice"):
        BeirDataset.load(root)
    _write_jsonl(root / "corpus.jsonl", [["d1", "a"]])
    with pytest.raises(DatasetError, match=r"corpus\.jsonl:1: expected a JSON object"):
        BeirDataset.load(root)
    (root / "queries.jsonl").unlink()
    _write_jsonl(root / "corpus.jsonl", [{"_id": "d1", "text": "a"}])
    with pytest.raises(DatasetError, match=r"queries\.jsonl not found"):
        BeirDataset.load(root)


def test_image_caption_bad_rows(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(DatasetError, match=r"captions\.jsonl not found.*image-caption layout"):
        ImageCaptionDataset.load(tmp_path, None)
    _write_jsonl(tmp_path / "captions.jsonl", [{"image": "a.jpg", "captions": []}])
    with pytest.raises(DatasetError, match=r"captions\.jsonl:1: field 'captions' must be a non-empty list"):
        ImageCaptionDataset.load(tmp_path, None)
    _write_jsonl(
        tmp_path / "captions.jsonl",
        [{"image": "a.jpg", "caption": "ok"}, {"image": "b.jpg", "captions": ["x"]}],
    )
    with pytest.raises(DatasetError, match=r"captions\.jsonl:2: image file .*b\.jpg not found"):
        ImageCaptionDataset.load(tmp_path, None)
    # no split field: only split=None selects the rows, and the error says so
    with pytest.raises(DatasetError, match=r"no split field.*split=None"):
        ImageCaptionDataset.load(tmp_path, "dev")
    ds = ImageCaptionDataset.load(tmp_path, None, limit=1)
    assert ds.captions == [("ok",)]


def test_val_ids_by_text_and_without_folds(tmp_path: Path) -> None:
    queries = tmp_path / "scifact" / "queries.jsonl"
    _write_jsonl(queries, [{"_id": "7", "text": "claim A"}, {"_id": "8", "text": "claim B"}])
    triplets = tmp_path / "triplets" / "t.jsonl"
    _write_jsonl(triplets, [{"fold": "train", "query": "claim A"}, {"fold": "val", "query": "claim B"}])
    assert scifact_val_query_ids(triplets) == {"8"}
    _write_jsonl(triplets, [{"fold": "val", "query": "claim C"}])
    with pytest.raises(DatasetError, match=r"t\.jsonl:1: val query text matches no query"):
        scifact_val_query_ids(triplets, queries)
    _write_jsonl(triplets, [{"query": "claim A"}])
    assert scifact_val_query_ids(triplets) is None


def test_docstring_examples() -> None:
    failures, _ = doctest.testmod(datasets)
    assert failures == 0
