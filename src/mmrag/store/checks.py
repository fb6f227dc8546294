"""Argument checks every search shares, on both backends: limit, modality, the tenant rule, dimensions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from mmrag.errors import ConfigError, DimensionMismatchError, StoreError
from mmrag.store.base import Filters
from mmrag.tenancy import require_one_tenant
from mmrag.types import MODALITIES

__all__ = ["query_matrix", "search_filter"]


def search_filter(
    limit: int, modality: str | None, filters: Filters | None, *, tenant_location: str | None
) -> dict[str, Any]:
    """The payload filter to send, after the checks every search shares; ``tenant_location``: the
    location of a multi-tenant store (its searches must name exactly one tenant), else ``None``."""
    if limit < 1:
        raise ConfigError(f"limit must be >= 1, got {limit}")
    if modality is not None and modality not in MODALITIES:
        raise ConfigError(f"modality must be one of {MODALITIES} or None, got {modality!r}")
    if tenant_location is not None:
        require_one_tenant(filters, tenant_location)
    flt: dict[str, Any] = dict(filters or {})
    if modality:
        flt["modality"] = modality
    return flt


def query_matrix(
    vector: str, queries: npt.NDArray[np.float32], dims: Mapping[str, int], location: str
) -> npt.NDArray[np.float32]:
    """The query rows as a 2-D float32 matrix, checked against the store's named vector."""
    if not dims:
        raise StoreError(f"store {location} is empty: ingest something first (mmrag ingest PATH)")
    if vector not in dims:
        raise StoreError(f"no vector {vector!r} in {location}; it holds {sorted(dims)}")
    matrix = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    if matrix.shape[1] != dims[vector]:
        raise DimensionMismatchError(
            f"query vectors have dimension {matrix.shape[1]}, vector {vector!r} holds {dims[vector]}"
        )
    return matrix
