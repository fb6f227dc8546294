"""API settings from the environment, and upload name sanitising."""

from __future__ import annotations

import sys
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


def test_gil_switch_interval_is_set_by_serve_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """MMRAG_GIL_SWITCH_MS: checked, 1 ms by default, applied by `mmrag serve` to its own process
    (not by building the app: a library user's process keeps its interval)."""
    import uvicorn

    import mmrag.api.app as app_module
    from mmrag.api import serve
    from mmrag.config import Settings

    assert ApiConfig.from_env({}).gil_switch_ms == 1.0
    assert ApiConfig.from_env({"MMRAG_GIL_SWITCH_MS": "0"}).gil_switch_ms == 0
    with pytest.raises(ConfigError, match="MMRAG_GIL_SWITCH_MS"):
        ApiConfig.from_env({"MMRAG_GIL_SWITCH_MS": "500"})
    before = sys.getswitchinterval()
    seen: list[float] = []
    monkeypatch.setattr(app_module, "build_app", lambda *a, **k: seen.append(sys.getswitchinterval()))
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: seen.append(sys.getswitchinterval()))
    try:
        for value, expected in (("0.5", 0.0005), ("0", before)):
            sys.setswitchinterval(before)
            monkeypatch.setenv("MMRAG_GIL_SWITCH_MS", value)
            serve(Settings.from_env())
            assert seen[-2] == pytest.approx(before)  # building the app leaves it alone
            assert seen[-1] == pytest.approx(expected)  # serving sets it (0: Python's own)
    finally:
        sys.setswitchinterval(before)


def test_access_log_follows_the_setting_and_the_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    """MMRAG_ACCESS_LOG (on by default) and `mmrag serve --no-access-log` reach uvicorn."""
    import uvicorn

    import mmrag.api.app as app_module
    from mmrag.cli import build_parser
    from mmrag.cli.serve import cmd_serve

    assert ApiConfig.from_env({}).access_log is True
    assert ApiConfig.from_env({"MMRAG_ACCESS_LOG": " Off "}).access_log is False
    assert ApiConfig.from_env({"MMRAG_ACCESS_LOG": "yes"}).access_log is True
    with pytest.raises(ConfigError, match="MMRAG_ACCESS_LOG must be 1 or 0"):
        ApiConfig.from_env({"MMRAG_ACCESS_LOG": "quiet"})
    seen: list[bool] = []
    monkeypatch.setattr(app_module, "build_app", lambda *a, **k: None)
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: seen.append(k["access_log"]))
    monkeypatch.setenv("MMRAG_GIL_SWITCH_MS", "0")  # serving leaves this test process's interval alone
    for env, argv, expected in (
        ("", [], True),
        ("0", [], False),
        ("1", ["--no-access-log"], False),
    ):
        monkeypatch.setenv("MMRAG_ACCESS_LOG", env)
        cmd_serve(build_parser().parse_args(["serve", *argv]))
        assert seen[-1] is expected
