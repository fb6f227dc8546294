"""API settings from the environment, and upload name sanitising."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmrag.api.config import ApiConfig, parse_tenant_keys, safe_name
from mmrag.errors import ConfigError, TenancyError


def test_from_env(tmp_path: Path) -> None:
    cfg = ApiConfig.from_env(
        {
            "MMRAG_SERVE_API_KEY": "k",
            "MMRAG_TENANT_KEYS": "acme:ka, globex:kg",
            "MMRAG_INGEST_ROOT": str(tmp_path),
            "MMRAG_MAX_UPLOAD_MB": "2.5",
            "MMRAG_SEARCH_TIMEOUT": "3",
        }
    )
    assert cfg.api_key == "k" and dict(cfg.tenant_keys) == {"ka": "acme", "kg": "globex"}
    assert cfg.ingest_root == tmp_path.resolve() and cfg.max_upload_bytes == int(2.5 * 1024 * 1024)
    assert cfg.search_timeout_s == 3.0 and ApiConfig.from_env({}).api_key is None
    with pytest.raises(ConfigError, match="MMRAG_MAX_UPLOAD_MB"):
        ApiConfig.from_env({"MMRAG_MAX_UPLOAD_MB": "lots"})
    with pytest.raises(ConfigError, match="> 0"):
        ApiConfig.from_env({"MMRAG_SEARCH_TIMEOUT": "0"})


def test_tenant_keys_are_checked() -> None:
    assert parse_tenant_keys("") == {}
    with pytest.raises(ConfigError, match="TENANT:KEY"):
        parse_tenant_keys("acme")
    with pytest.raises(TenancyError):
        parse_tenant_keys("bad tenant:key")


def test_safe_name() -> None:
    assert safe_name("../../etc/passwd") == "passwd"
    assert safe_name("C:\\\\x\\\\report v2.pdf") == "report_v2.pdf"
    assert safe_name(".bashrc") == "bashrc" and safe_name("...") == "upload"
