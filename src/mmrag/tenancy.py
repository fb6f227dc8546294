"""Tenants: one store shared by several tenants that must never read each other's points.

A chunk ingested for a tenant carries the payload key ``tenant`` (on Qdrant's tenant index) and
an id derived from the tenant, so the same file ingested by two tenants gives two points, and a
multi-tenant store refuses any search without exactly one tenant filter
(:meth:`mmrag.store.QdrantStore.enable_tenancy`).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import replace

from mmrag.errors import TenancyError
from mmrag.types import Chunk

_TENANT_NAMESPACE = uuid.UUID("0b8f6c1e-3a57-4f0e-9d22-7c1a5e9b4d30")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_tenant(name: str) -> str:
    """Return ``name`` if it is a valid tenant name (1-64 of ``A-Z a-z 0-9 _ . -``), else raise.

    Example:
        >>> check_tenant("acme-1")
        'acme-1'
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise TenancyError(
            f"tenant must be 1-64 characters of letters, digits, '_', '.', '-' (starting with a "
            f"letter or digit), got {name!r}"
        )
    return name


def tenant_chunk_id(tenant: str, chunk_id: str) -> str:
    """The id of ``chunk_id`` as stored for ``tenant`` (deterministic, distinct per tenant)."""
    return str(uuid.uuid5(_TENANT_NAMESPACE, f"{tenant}\x00{chunk_id}"))


def with_tenant(chunks: Iterable[Chunk], tenant: str) -> list[Chunk]:
    """Copies of ``chunks`` owned by ``tenant``: tenant-specific ids and ``metadata["tenant"]``."""
    check_tenant(tenant)
    return [
        replace(c, id=tenant_chunk_id(tenant, c.id), metadata={**c.metadata, "tenant": tenant})
        for c in chunks
    ]


def require_one_tenant(filters: Mapping[str, object] | None, location: str) -> str:
    """The tenant a search on a multi-tenant store is restricted to; refuses any other filter shape.

    The rule every face and backend shares: such a store answers only searches that filter on
    exactly one tenant (a list, a missing or an empty value would read several tenants' points).

    Example:
        >>> require_one_tenant({"tenant": "acme"}, "/tmp/store")
        'acme'
    """
    tenant = (filters or {}).get("tenant")
    if not isinstance(tenant, str) or not tenant:
        raise TenancyError(
            f"store {location} is multi-tenant: every search must filter on exactly one "
            f"tenant (filters={{'tenant': NAME}}), got {tenant!r}"
        )
    return tenant
