"""One search as a record: what the CLI, the API, the app and LangChain ask the retriever for.

A :class:`SearchRequest` names the query (text, image, or both: a composed query), how many hits,
the candidate pool, the filters and tenant, and which stages run: a :class:`RetrievalMode` for the
first stage and ``rerank`` for the second. Faces build one and call :meth:`Retriever.run`
instead of threading a growing set of keyword arguments and booleans through.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmrag.errors import ConfigError
from mmrag.types import MODALITIES

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["GROUP_KEYS", "MAX_EXPAND", "RetrievalMode", "SearchRequest"]

GROUP_KEYS = ("source",)  # what hits can be grouped by: the document they came from
MAX_EXPAND = 20  # neighbours per side: a bound so one request cannot pull a whole document per hit


class RetrievalMode(StrEnum):
    """The first stage: dense ANN alone, or dense fused with BM25 (hybrid).

    Example:
        >>> RetrievalMode("hybrid") is RetrievalMode.HYBRID
        True
    """

    DENSE = "dense"
    HYBRID = "hybrid"


@dataclass(frozen=True, slots=True)
class SearchRequest:
    """One search: the query, how much to return, the filters, and which stages run.

    Attributes:
        text: Text query (``None``: an image query).
        image: Image query: a PIL image or a file path (``None``: a text query). With ``text``
            too, the query is the normalised sum of both embeddings (dense only).
        k: Hits to return (>= 1).
        pool: First-stage candidates (>= 1); ``None``: the retriever's.
        modality: Only ``"text"`` or ``"image"`` chunks; ``None``: both.
        filters: Payload filter, ``{key: value | [values]}`` ANDed (see :mod:`mmrag.store`).
        tenant: Only this tenant's chunks (needed by a multi-tenant store); merged into the filters.
        mode: First stage (:class:`RetrievalMode`); ``None``: the retriever's default.
        rerank: ``True`` / ``False`` turn the second stage on / off; ``None``: the retriever's default.
        image_weight: A composed query's image share in [0, 1]: the query vector is the normalised
            ``(1 - w) * text + w * image`` (0.5: both alike).
        group_by: ``"source"``: ``k`` counts documents, each with up to ``group_size`` hits, ranked by
            their best hit's final rank (see :mod:`mmrag.retriever.post`); ``None``: chunks.
        group_size: Hits kept per document when grouping (>= 1).
        expand: Attach up to this many neighbouring chunks on each side in reading order to every
            hit's ``context`` (a figure gets its page's text, a text chunk its page's figures);
            0: none. Context chunks do not count in ``k``.
        mmr_lambda: Re-order the rerank-stage pool by maximal marginal relevance before the cut,
            in [0, 1] (1: relevance alone, 0: diversity alone); ``None``: off.

    Example:
        >>> req = SearchRequest(text="dense passage retrieval", k=3, tenant="acme")
        >>> req.search_filters()
        {'tenant': 'acme'}
    """

    text: str | None = None
    image: Image.Image | str | Path | None = None
    k: int = 10
    pool: int | None = None
    modality: str | None = None
    filters: Mapping[str, Any] | None = None
    tenant: str | None = None
    mode: RetrievalMode | None = None
    rerank: bool | None = None
    image_weight: float = 0.5
    group_by: str | None = None
    group_size: int = 1
    expand: int = 0
    mmr_lambda: float | None = None

    def __post_init__(self) -> None:
        self._check_results()
        if self.k < 1:
            raise ConfigError(f"k must be >= 1, got {self.k}")
        if self.pool is not None and self.pool < 1:
            raise ConfigError(f"pool must be >= 1, got {self.pool}")
        if self.modality is not None and self.modality not in MODALITIES:
            raise ConfigError(f"modality must be one of {MODALITIES}, got {self.modality!r}")
        if self.mode is not None and not isinstance(self.mode, RetrievalMode):
            # a plain string from a form or a flag: check it now, not deep inside the retriever
            try:
                object.__setattr__(self, "mode", RetrievalMode(self.mode))
            except ValueError as exc:
                modes = [m.value for m in RetrievalMode]
                raise ConfigError(f"mode must be one of {modes}, got {self.mode!r}") from exc

    def _check_results(self) -> None:
        """The result-shaping fields (composed weight, grouping, context, diversity) are in range."""
        if not 0.0 <= self.image_weight <= 1.0:
            raise ConfigError(f"image_weight must be in [0, 1], got {self.image_weight}")
        if self.group_by is not None and self.group_by not in GROUP_KEYS:
            raise ConfigError(f"group_by must be one of {GROUP_KEYS} or None, got {self.group_by!r}")
        if self.group_size < 1:
            raise ConfigError(f"group_size must be >= 1, got {self.group_size}")
        if self.group_size > 1 and self.group_by is None:
            raise ConfigError("group_size needs group_by (e.g. group_by='source')")
        if not 0 <= self.expand <= MAX_EXPAND:
            raise ConfigError(f"expand must be between 0 and {MAX_EXPAND}, got {self.expand}")
        if self.mmr_lambda is not None and not 0.0 <= self.mmr_lambda <= 1.0:
            raise ConfigError(f"mmr_lambda must be in [0, 1], got {self.mmr_lambda}")

    @property
    def refines(self) -> bool:
        """Whether the hits are reshaped after the cut: grouped, expanded or diversified."""
        return self.group_by is not None or self.expand > 0 or self.mmr_lambda is not None

    @property
    def hybrid(self) -> bool | None:
        """The mode as the retriever's ``hybrid`` switch (``None``: its default)."""
        return None if self.mode is None else self.mode is RetrievalMode.HYBRID

    @property
    def composed(self) -> bool:
        """Whether the query has both a text and an image."""
        return self.text is not None and self.image is not None

    def search_filters(self) -> dict[str, Any] | None:
        """``filters`` with ``tenant`` merged in (``None`` when there is nothing to filter on).

        Raises:
            ConfigError: ``filters`` names another tenant than ``tenant``.
        """
        flt: dict[str, Any] = dict(self.filters or {})
        if self.tenant is not None:
            if flt.get("tenant", self.tenant) != self.tenant:
                raise ConfigError(
                    f"this search is for tenant {self.tenant!r}; a filter on tenant "
                    f"{flt['tenant']!r} would read another tenant's data"
                )
            flt["tenant"] = self.tenant
        return flt or None
