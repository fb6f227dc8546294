"""Readers for the two evaluation layouts: BEIR (text retrieval) and image-caption folders.

Every problem with a folder raises :class:`~mmrag.errors.DatasetError` naming the file, the
line and the layout that was expected, so a user can fix the data without reading this code.

BEIR layout (as written by ``beir.util.download_and_unzip``)::

    root/corpus.jsonl          {"_id", "title" (optional), "text"}
    root/queries.jsonl         {"_id", "text"}
    root/qrels/<split>.tsv     header "query-id<TAB>corpus-id<TAB>score", then one judgment a line

Image-caption layout (Flickr8k, skimage_clip8)::

    root/captions.jsonl        {"image", "split" (optional), "captions": [str, ...]} one image a line
    root/images/<image>
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mmrag.errors import DatasetError
from mmrag.eval._readers import read_jsonl as _read_jsonl
from mmrag.eval._readers import str_field as _str_field

__all__ = [
    "BEIR_LAYOUT",
    "IMAGE_CAPTION_LAYOUT",
    "BeirDataset",
    "ImageCaptionDataset",
    "detect_layout",
    "scifact_val_query_ids",
    "scifact_val_slice",
]

BEIR_LAYOUT = (
    "BEIR layout: corpus.jsonl with {'_id', 'title', 'text'} rows, queries.jsonl with {'_id', 'text'} rows "
    "and qrels/<split>.tsv with a 'query-id<TAB>corpus-id<TAB>score' header"
)
IMAGE_CAPTION_LAYOUT = (
    "image-caption layout: captions.jsonl with {'image', 'split' (optional), 'captions': [...]} rows "
    "and the image files under images/"
)


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    if not path.is_file():
        available = sorted(p.stem for p in path.parent.glob("*.tsv")) if path.parent.is_dir() else []
        hint = f"available splits: {', '.join(available)}" if available else "no qrels/*.tsv found"
        raise DatasetError(f"{path} not found ({hint}); expected the {BEIR_LAYOUT}")
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            parts = line.rstrip("\r\n").split("\t")
            if len(parts) != 3:
                raise DatasetError(
                    f"{path}:{lineno}: expected 3 tab-separated columns (query-id, corpus-id, score), "
                    f"got {len(parts)}; see the {BEIR_LAYOUT}"
                )
            query_id, doc_id, raw_score = (p.strip() for p in parts)
            try:
                score = int(raw_score)
            except ValueError:
                if lineno == 1:  # the header line
                    continue
                raise DatasetError(
                    f"{path}:{lineno}: score {raw_score!r} is not an integer; see the {BEIR_LAYOUT}"
                ) from None
            # BEIR's loader keeps only positive judgments; zero means "judged not relevant".
            if score > 0:
                qrels.setdefault(query_id, {})[doc_id] = score
    return qrels


@dataclass(frozen=True, slots=True)
class BeirDataset:
    """A BEIR-layout text retrieval set: corpus, the split's queries, and their qrels.

    Like BEIR's ``GenericDataLoader``, ``queries`` holds only the queries that have at least one
    positive judgment in the split, so every query is scoreable.

    Attributes:
        root: The dataset folder.
        corpus: Doc id -> (title, text); title is ``""`` when the corpus has none.
        queries: Query id -> query text, restricted to judged queries.
        qrels: Query id -> {doc id: relevance > 0}, restricted to ``queries``.

    Example:
        >>> ds = BeirDataset.load(Path("../shared/data/scifact"), "train")  # doctest: +SKIP
        >>> len(ds.queries), len(ds.corpus)  # doctest: +SKIP
        (809, 5183)
    """

    root: Path
    corpus: Mapping[str, tuple[str, str]]
    queries: Mapping[str, str]
    qrels: Mapping[str, Mapping[str, int]]

    @classmethod
    def load(cls, root: Path, split: str = "train", *, query_ids: Iterable[str] | None = None) -> BeirDataset:
        """Read ``root`` in BEIR layout.

        Args:
            root: Folder holding ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``.
            split: Name of the qrels file without ``.tsv``.
            query_ids: Optional subset of judged query ids to keep (e.g. a validation fold).

        Returns:
            The loaded dataset.

        Raises:
            DatasetError: If a file is missing or malformed, a doc or query id repeats, a requested
                query id is not judged in the split, or no judged query remains.
        """
        root = Path(root)
        corpus: dict[str, tuple[str, str]] = {}
        corpus_path = root / "corpus.jsonl"
        for lineno, row in _read_jsonl(corpus_path, BEIR_LAYOUT):
            where = f"{corpus_path}:{lineno}"
            doc_id = _str_field(row, "_id", where, BEIR_LAYOUT)
            if doc_id in corpus:
                raise DatasetError(f"{where}: doc id {doc_id!r} appears twice; ids must be unique")
            title = _str_field(row, "title", where, BEIR_LAYOUT, required=False)
            corpus[doc_id] = (title, _str_field(row, "text", where, BEIR_LAYOUT))

        all_queries: dict[str, str] = {}
        queries_path = root / "queries.jsonl"
        for lineno, row in _read_jsonl(queries_path, BEIR_LAYOUT):
            where = f"{queries_path}:{lineno}"
            query_id = _str_field(row, "_id", where, BEIR_LAYOUT)
            if query_id in all_queries:
                raise DatasetError(f"{where}: query id {query_id!r} appears twice; ids must be unique")
            all_queries[query_id] = _str_field(row, "text", where, BEIR_LAYOUT)

        qrels_path = root / "qrels" / f"{split}.tsv"
        qrels = {q: docs for q, docs in _read_qrels(qrels_path).items() if q in all_queries}
        if query_ids is not None:
            wanted = list(dict.fromkeys(str(q) for q in query_ids))
            unknown = [q for q in wanted if q not in qrels]
            if unknown:
                raise DatasetError(
                    f"{len(unknown)} requested query ids have no positive judgment in {qrels_path} "
                    f"(first: {unknown[:5]}); pass ids of this dataset's {split!r} split"
                )
            qrels = {q: qrels[q] for q in wanted}
        if not qrels:
            raise DatasetError(
                f"no query of {queries_path} has a positive judgment in {qrels_path}; "
                "check that the two files use the same query ids"
            )
        queries = {q: all_queries[q] for q in qrels}
        return cls(root=root, corpus=corpus, queries=queries, qrels=qrels)

    def doc_text(self, doc_id: str) -> str:
        """The text to embed for a doc: ``title + " " + text``, stripped, as BEIR's SBERT eval does.

        Raises:
            KeyError: If ``doc_id`` is not in the corpus.
        """
        title, text = self.corpus[doc_id]
        return f"{title} {text}".strip()


@dataclass(frozen=True, slots=True)
class ImageCaptionDataset:
    """Images with their human captions, in ``captions.jsonl`` order.

    Attributes:
        root: The dataset folder.
        images: ``root / "images" / <image>`` for each row kept.
        captions: ``captions[i]`` are the captions of ``images[i]`` (at least one each).

    Example:
        >>> ds = ImageCaptionDataset.load(Path("../shared/data/flickr8k"), "dev")  # doctest: +SKIP
        >>> len(ds), len(ds.captions[0])  # doctest: +SKIP
        (1000, 5)
    """

    root: Path
    images: Sequence[Path]
    captions: Sequence[Sequence[str]]

    @classmethod
    def load(cls, root: Path, split: str | None = "dev", *, limit: int | None = None) -> ImageCaptionDataset:
        """Read ``root/captions.jsonl`` and check that each kept image exists.

        Args:
            root: Folder holding ``captions.jsonl`` and ``images/``.
            split: Keep rows whose ``split`` field equals this; ``None`` keeps every row (use it
                for folders whose rows have no ``split`` field).
            limit: Keep only the first ``limit`` matching images.

        Returns:
            The loaded dataset.

        Raises:
            ValueError: If ``limit < 1``.
            DatasetError: If a file is missing, a row is malformed, an image file is missing, or
                no row matches ``split``.
        """
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be at least 1 or None, got {limit}")
        root = Path(root)
        path = root / "captions.jsonl"
        images: list[Path] = []
        captions: list[tuple[str, ...]] = []
        splits_seen: set[str] = set()
        for lineno, row in _read_jsonl(path, IMAGE_CAPTION_LAYOUT):
            if limit is not None and len(images) >= limit:
                break
            where = f"{path}:{lineno}"
            row_split = row.get("split")
            if row_split is not None and not isinstance(row_split, str):
                raise DatasetError(f"{where}: field 'split' must be a string; see the {IMAGE_CAPTION_LAYOUT}")
            splits_seen.add(row_split if row_split is not None else "(no split field)")
            if split is not None and row_split != split:
                continue
            image = _str_field(row, "image", where, IMAGE_CAPTION_LAYOUT)
            image_path = root / "images" / image
            if not image_path.is_file():
                raise DatasetError(
                    f"{where}: image file {image_path} not found; see the {IMAGE_CAPTION_LAYOUT}"
                )
            images.append(image_path)
            captions.append(_captions_of(row, where))
        if not images:
            found = ", ".join(sorted(splits_seen)) or "no rows"
            raise DatasetError(
                f"{path}: no image in split {split!r} (splits found: {found}); "
                "pass one of those splits, or split=None to load every row"
            )
        return cls(root=root, images=images, captions=captions)

    def __len__(self) -> int:
        return len(self.images)

    def flat_captions(self) -> tuple[list[str], list[int]]:
        """All captions in one list, with the index of the image each belongs to.

        This is the text→image protocol's query list: caption ``j`` has exactly one relevant
        image, ``images[owners[j]]``.

        Returns:
            ``(texts, owners)`` of equal length.

        Example:
            >>> ds = ImageCaptionDataset(Path("."), [Path("a.jpg")], [("x", "y")])
            >>> ds.flat_captions()
            (['x', 'y'], [0, 0])
        """
        texts: list[str] = []
        owners: list[int] = []
        for i, caps in enumerate(self.captions):
            texts.extend(caps)
            owners.extend([i] * len(caps))
        return texts, owners


def _captions_of(row: Mapping[str, Any], where: str) -> tuple[str, ...]:
    # A single "caption" string is accepted too: one-caption folders are often written that way.
    value = row.get("captions", row.get("caption"))
    caps = (value,) if isinstance(value, str) else value
    if (
        not isinstance(caps, list | tuple)
        or not caps
        or not all(isinstance(c, str) and c.strip() for c in caps)
    ):
        raise DatasetError(
            f"{where}: field 'captions' must be a non-empty list of non-empty strings; "
            f"see the {IMAGE_CAPTION_LAYOUT}"
        )
    return tuple(caps)


def detect_layout(root: Path) -> Literal["beir", "image-caption"]:
    """Tell which evaluation layout a folder has.

    Args:
        root: Dataset folder.

    Returns:
        ``"beir"`` or ``"image-caption"``.

    Raises:
        DatasetError: If ``root`` is not a folder or matches neither layout; the message says
            what each layout needs and which parts are missing.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(
            f"{root} is not a folder; pass a dataset folder in the {BEIR_LAYOUT}, "
            f"or the {IMAGE_CAPTION_LAYOUT}"
        )
    beir_parts = {
        "corpus.jsonl": (root / "corpus.jsonl").is_file(),
        "queries.jsonl": (root / "queries.jsonl").is_file(),
        "qrels/": (root / "qrels").is_dir(),
    }
    image_parts = {
        "captions.jsonl": (root / "captions.jsonl").is_file(),
        "images/": (root / "images").is_dir(),
    }
    if all(beir_parts.values()):
        return "beir"
    if all(image_parts.values()):
        return "image-caption"
    missing_beir = ", ".join(k for k, ok in beir_parts.items() if not ok)
    missing_image = ", ".join(k for k, ok in image_parts.items() if not ok)
    raise DatasetError(
        f"{root} matches no evaluation layout. Expected either the {BEIR_LAYOUT} (missing: {missing_beir}), "
        f"or the {IMAGE_CAPTION_LAYOUT} (missing: {missing_image})"
    )


def scifact_val_query_ids(triplets_file: Path, queries_file: Path | None = None) -> set[str] | None:
    """Query ids of the ``"val"`` fold of the SciFact triplets, for selecting a checkpoint.

    The shipped file's rows carry ``fold`` (``"train"`` / ``"val"``) and ``query_id``. For a file
    without ids, val queries are matched by their text against ``queries_file``.

    Args:
        triplets_file: ``triplets/scifact_train_triplets.jsonl``.
        queries_file: Used only when rows have no ``query_id``; defaults to
            ``<triplets_file>/../../scifact/queries.jsonl`` (the shared data layout).

    Returns:
        The val query ids, or ``None`` if no row has a ``fold`` field (the file has no folds).

    Raises:
        DatasetError: If a file is missing or malformed, or a val query's text matches no query.
    """
    triplets_file = Path(triplets_file)
    layout = "SciFact triplets layout: {'fold', 'query_id', 'query', ...} one JSON object a line"
    has_folds = False
    ids: set[str] = set()
    unmatched: list[tuple[int, str]] = []
    for lineno, row in _read_jsonl(triplets_file, layout):
        if "fold" not in row:
            continue
        has_folds = True
        if row["fold"] != "val":
            continue
        where = f"{triplets_file}:{lineno}"
        if row.get("query_id") is not None:
            ids.add(str(row["query_id"]))
        else:
            unmatched.append((lineno, _str_field(row, "query", where, layout)))
    if not has_folds:
        return None
    if unmatched:
        qfile = (
            Path(queries_file) if queries_file else triplets_file.parent.parent / "scifact" / "queries.jsonl"
        )
        by_text: dict[str, str] = {}
        for lineno, row in _read_jsonl(qfile, BEIR_LAYOUT):
            where = f"{qfile}:{lineno}"
            by_text.setdefault(
                _str_field(row, "text", where, BEIR_LAYOUT).strip(),
                _str_field(row, "_id", where, BEIR_LAYOUT),
            )
        for lineno, text in unmatched:
            if text.strip() not in by_text:
                raise DatasetError(
                    f"{triplets_file}:{lineno}: val query text matches no query in {qfile}; "
                    "pass the queries.jsonl the triplets were built from"
                )
            ids.add(by_text[text.strip()])
    return ids


def scifact_val_slice(
    data: Path, queries: int | None = None, docs: int | None = None
) -> tuple[BeirDataset, list[str]]:
    """SciFact train with the ids of its held-out val-fold queries (the first ``queries`` of them).

    ``data`` is the shared data root (``scifact/`` and ``triplets/``). ``docs`` (smoke runs): keep
    only the first N corpus docs plus the relevant docs of those queries.
    """
    ds = BeirDataset.load(data / "scifact", "train")
    val = scifact_val_query_ids(data / "triplets" / "scifact_train_triplets.jsonl") or set()
    qids = sorted(q for q in val if q in ds.queries)[:queries]
    if docs:
        keep = set(list(ds.corpus)[:docs]) | {d for q in qids for d in ds.qrels[q]}
        ds = type(ds)(ds.root, {d: v for d, v in ds.corpus.items() if d in keep}, ds.queries, ds.qrels)
    return ds, qids
