from __future__ import annotations

import pytest

from featureledger.config import load_config
from featureledger.errors import ConfigError


def test_file_env_and_explicit_overrides_in_order(tmp_path) -> None:
    (tmp_path / "featureledger.yaml").write_text(
        "project: p\nonline_store: {type: redis, timeout_s: 1.5}\n")
    cfg = load_config(tmp_path, environ={})
    assert cfg.online_store.type == "redis" and cfg.online_store.timeout_s == 1.5
    cfg = load_config(tmp_path, environ={"FEATURELEDGER__ONLINE_STORE__TIMEOUT_S": "0.2",
                                         "FEATURELEDGER_REGISTRY": "sqlite:////tmp/x.db"})
    assert cfg.online_store.timeout_s == 0.2 and cfg.registry_url == "sqlite:////tmp/x.db"
    cfg = load_config(tmp_path, environ={"FEATURELEDGER__ONLINE_STORE__TIMEOUT_S": "0.2"},
                      overrides={"online_store": {"type": "sqlite"}})
    assert cfg.online_store.type == "sqlite"
    assert cfg.registry_url == f"sqlite:///{tmp_path / '.featureledger' / 'registry.db'}"


def test_unknown_keys_and_bad_values_are_errors(tmp_path) -> None:
    (tmp_path / "featureledger.yaml").write_text("project: p\nonline_store: {type: redis, tmeout: 1}\n")
    with pytest.raises(ConfigError, match=r"online_store\.redis\.tmeout: Extra inputs"):
        load_config(tmp_path, environ={})
    (tmp_path / "featureledger.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(tmp_path, environ={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml", environ={})
