"""What ``mmrag eval`` returns: one typed report per dataset layout, rendered as JSON or as text.

``to_dict()`` is the JSON of ``mmrag eval --json`` (keys and their order unchanged); ``to_text()``
is what ``mmrag eval`` prints.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["BeirEvalReport", "EvalReport", "ImageCaptionEvalReport"]


def _text(dataset: str, layout: str, encoder: str, metrics: Mapping[str, float]) -> str:
    lines = "\n".join(f"{k:>16}: {v:.4f}" for k, v in metrics.items())
    return f"{dataset} ({layout}), encoder {encoder}\n{lines}"


@dataclass(frozen=True, slots=True)
class BeirEvalReport:
    """Text retrieval on a BEIR dataset: nDCG@k / Recall@k / MRR over the judged queries.

    Attributes:
        dataset: Dataset folder.
        encoder: Encoder id.
        queries: Judged queries asked.
        corpus: Documents indexed.
        metrics: ``ndcg@k`` / ``recall@k`` per cut-off, then ``mrr``.
        seconds: Wall time of ``index`` and ``search``.

    Example:
        >>> r = BeirEvalReport("scifact", "lite", 2, 10, {"mrr": 0.5}, {"index": 1.0, "search": 0.1})
        >>> print(r.to_text())
        scifact (beir), encoder lite
                     mrr: 0.5000
    """

    dataset: str
    encoder: str
    queries: int
    corpus: int
    metrics: Mapping[str, float]
    seconds: Mapping[str, float]
    layout: Literal["beir"] = "beir"
    pipeline: str = "dense"
    stages: Mapping[str, Mapping[str, float]] | None = None
    reranker: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "dataset": self.dataset,
            "layout": self.layout,
            "encoder": self.encoder,
            "queries": self.queries,
            "corpus": self.corpus,
            "metrics": dict(self.metrics),
            "seconds": dict(self.seconds),
            "pipeline": self.pipeline,
        }
        if self.reranker is not None:
            out["reranker"] = self.reranker
        if self.stages is not None:
            out["stages"] = {name: dict(m) for name, m in self.stages.items()}
        return out

    def to_text(self) -> str:
        text = _text(self.dataset, self.layout, self.encoder, self.metrics)
        text = text.replace(f"encoder {self.encoder}", f"encoder {self.encoder}, pipeline {self.pipeline}", 1)
        if self.stages:
            from mmrag.eval.stages import stage_table

            text += "\n\nstages (one run, same queries):\n" + stage_table(self.stages)
            if "rerank" not in self.stages:
                text += "\n(no rerank rows: give --reranker MODEL to include them)"
        return text


@dataclass(frozen=True, slots=True)
class ImageCaptionEvalReport:
    """Flickr-protocol Recall@1/5/10 (text→image and image→text) and ``rsum``.

    Attributes:
        dataset: Dataset folder.
        encoder: Encoder id.
        aligned: Whether the encoder's image and text heads were trained together.
        images: Images indexed (image→text queries).
        captions: Captions indexed (text→image queries).
        metrics: ``t2i_recall@k`` / ``i2t_recall@k`` per cut-off, then ``rsum``.
        seconds: Wall time of ``index`` and ``search``.

    Example:
        >>> r = ImageCaptionEvalReport("flickr8k", "lite", True, 1, 5, {"rsum": 300.0}, {})
        >>> r.to_dict()["layout"]
        'image-caption'
    """

    dataset: str
    encoder: str
    aligned: bool
    images: int
    captions: int
    metrics: Mapping[str, float]
    seconds: Mapping[str, float]
    layout: Literal["image-caption"] = "image-caption"
    stages: Mapping[str, Mapping[str, float]] | None = None

    # Why an image-caption set has one stage: its images carry no text, so BM25 and a text
    # cross-encoder have nothing to score on one side of every query.
    STAGES_NOTE = (
        "image-caption sets have one stage here (dense): the images carry no text, so BM25, hybrid "
        "and the text cross-encoder cannot score them"
    )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "dataset": self.dataset,
            "layout": self.layout,
            "encoder": self.encoder,
            "aligned": self.aligned,
            "images": self.images,
            "captions": self.captions,
            "metrics": dict(self.metrics),
            "seconds": dict(self.seconds),
        }
        if self.stages is not None:
            out["stages"] = {name: dict(m) for name, m in self.stages.items()}
            out["stages_note"] = self.STAGES_NOTE
        return out

    def to_text(self) -> str:
        text = _text(self.dataset, self.layout, self.encoder, self.metrics)
        return text + (f"\nnote: {self.STAGES_NOTE}" if self.stages is not None else "")


EvalReport = BeirEvalReport | ImageCaptionEvalReport
"""What :func:`mmrag.eval.runner.evaluate_beir` / :func:`~mmrag.eval.runner.evaluate_image_caption` return."""
