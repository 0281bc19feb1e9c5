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


def _write(tmp_path, text: str):
    (tmp_path / "featureledger.yaml").write_text(text)
    return tmp_path


def test_spark_as_offline_store_is_refused_pointing_to_the_engine(tmp_path) -> None:
    from featureledger import FeatureStore

    _write(tmp_path, "project: p\noffline_store: {type: spark, master: 'local[2]'}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path, environ={})
    msg = str(exc.value)
    assert "offline_store: Spark is an offline engine, not an offline store" in msg
    assert "'offline_engine: {type: spark}'" in msg
    assert "Available offline_store types: 'parquet'" in msg and "DuckDB" in msg
    # the store refuses to open: nothing is created on disk
    with pytest.raises(ConfigError, match="Spark is an offline engine"):
        FeatureStore(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["featureledger.yaml"]
    # the same through the environment
    _write(tmp_path, "project: p\n")
    with pytest.raises(ConfigError, match="Spark is an offline engine"):
        load_config(tmp_path, environ={"FEATURELEDGER__OFFLINE_STORE__TYPE": "spark"})


def test_spark_engine_settings_are_validated_and_typos_name_the_known_keys(tmp_path) -> None:
    from featureledger.config import SparkEngineConfig

    _write(tmp_path, "offline_engine: {type: spark, master: 'local[1]', shuffle_partitions: 2,"
                     " conf: {spark.driver.memory: 1g}}\n")
    cfg = load_config(tmp_path, environ={})
    assert isinstance(cfg.offline_engine, SparkEngineConfig)
    assert (cfg.offline_engine.master, cfg.offline_engine.shuffle_partitions,
            cfg.offline_engine.conf) == ("local[1]", 2, {"spark.driver.memory": "1g"})
    # switching the type through the environment drops the other engine's keys
    _write(tmp_path, "offline_engine: {type: duckdb, threads: 2}\n")
    cfg = load_config(tmp_path, environ={"FEATURELEDGER__OFFLINE_ENGINE__TYPE": "spark"})
    assert cfg.offline_engine.type == "spark"
    _write(tmp_path, "offline_engine: {type: spark, mastr: 'local[2]'}\n")
    with pytest.raises(ConfigError, match=r"mastr.*known keys: type, master, app_name, "
                                          r"shuffle_partitions, conf"):
        load_config(tmp_path, environ={})
    _write(tmp_path, "offline_engine: {type: flink}\n")
    with pytest.raises(ConfigError, match=r"type 'flink' is not implemented.*'duckdb'.*'spark'"):
        load_config(tmp_path, environ={})


def test_unimplemented_store_types_are_refused_naming_the_implemented_ones(tmp_path) -> None:
    _write(tmp_path, "online_store: {type: memcached}\n")
    with pytest.raises(ConfigError, match=r"online_store: type 'memcached' is not implemented\. "
                       r"Available online_store types: 'sqlite' .*; 'redis'"):
        load_config(tmp_path, environ={})
    _write(tmp_path, "offline_store: {type: gcs, path: bucket}\n")
    with pytest.raises(ConfigError, match=r"type 'gcs' is not implemented.*'parquet'.*'s3'"):
        load_config(tmp_path, environ={})
    # a store section without a type is the embedded default
    _write(tmp_path, "online_store: {path: other.db}\n")
    cfg = load_config(tmp_path, environ={})
    assert cfg.online_store.type == "sqlite" and cfg.online_store.path == "other.db"


def test_unknown_keys_name_the_keys_of_their_section(tmp_path) -> None:
    # a Spark-only setting on the parquet store is not silently accepted either
    _write(tmp_path, "offline_store: {type: parquet, master: 'local[2]'}\n")
    with pytest.raises(ConfigError, match=r"offline_store\.parquet\.master: Extra inputs are not "
                       r"permitted \(known keys: type, path, duckdb_memory_limit, "
                       r"duckdb_threads, verify_digests\)"):
        load_config(tmp_path, environ={})
    _write(tmp_path, "online_store: {type: redis, tmeout: 1}\n")
    with pytest.raises(ConfigError, match=r"online_store\.redis\.tmeout: .*known keys: type, "
                       r"url, key_prefix, timeout_s, retries"):
        load_config(tmp_path, environ={})
    _write(tmp_path, "serving: {cach: true}\n")
    with pytest.raises(ConfigError, match=r"serving\.cach: .*known keys: cache, "):
        load_config(tmp_path, environ={})


def test_registry_backends_that_do_not_exist_are_refused(tmp_path) -> None:
    for url in ("mysql://u@h/db", "registry.db", "postgres://u@h/db"):
        _write(tmp_path, f"registry: '{url}'\n")
        with pytest.raises(ConfigError, match=r"registry: registry URL .* names no available "
                           r"backend; use sqlite:///.*or postgresql\+psycopg://"):
            load_config(tmp_path, environ={})
    _write(tmp_path, "registry: postgresql+psycopg://u@h/db\n")
    assert load_config(tmp_path, environ={}).registry == "postgresql+psycopg://u@h/db"


def test_root_in_the_file_is_refused_rather_than_ignored(tmp_path) -> None:
    _write(tmp_path, "project: p\nroot: /somewhere/else\n")
    with pytest.raises(ConfigError, match=r"'root' .* is not a setting"):
        load_config(tmp_path, environ={})
    with pytest.raises(ConfigError, match=r"'root' .* is not a setting"):
        load_config(_write(tmp_path, "project: p\n"), environ={"FEATURELEDGER__ROOT": "/x"})


def test_openlineage_transport_needs_a_known_type(tmp_path) -> None:
    # without a type the client would fall back to the console, whatever else is set
    _write(tmp_path, "openlineage: {enabled: true, transport: {url: 'http://x:5000'}}\n")
    with pytest.raises(ConfigError, match=r"openlineage\.transport: the transport needs a "
                       r"type: console, file .* or http"):
        load_config(tmp_path, environ={})
    _write(tmp_path, "openlineage: {enabled: true, transport: {type: kafkaa}}\n")
    with pytest.raises(ConfigError, match=r"transport type 'kafkaa' is not known .*console.*"
                       r"file.*http"):
        load_config(tmp_path, environ={})
    _write(tmp_path, "openlineage: {enabled: true, transport: {type: file, "
                     "log_file_path: ev.jsonl}}\n")
    assert load_config(tmp_path, environ={}).openlineage.transport["type"] == "file"
