"""Shared fixtures: backends parametrized over every available server.

PostgreSQL (127.0.0.1:5432, database ``test``) and Redis (127.0.0.1:6379) are used when
they answer. Without them a test skips with a message saying how to enable it; under CI
(``CI`` set) a missing server fails the test instead, so CI can never pass by skipping.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

import pytest

PG_HOST, PG_PORT, PG_DB = "127.0.0.1", 5432, "test"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int, how: str) -> None:
    if _reachable(host, port):
        return
    msg = f"{name} is not reachable at {host}:{port}; {how}"
    if os.environ.get("CI"):
        pytest.fail(f"{msg} (CI must run every backend)")
    pytest.skip(msg)


def require_postgres() -> None:
    require_service(
        "PostgreSQL", PG_HOST, PG_PORT,
        "start it (trust auth, database 'test') to run the PostgreSQL tests",
    )


def require_redis() -> None:
    require_service(
        "Redis", REDIS_HOST, REDIS_PORT,
        "start it with: redis-server --port 6379 --save '' to run the Redis tests",
    )


def require_pyspark() -> None:
    """Skip (fail under CI) when pyspark is not installed."""
    import shutil

    msg = None
    try:
        import pyspark  # noqa: F401
    except ImportError:
        msg = ("pyspark is not installed; install it with pip install 'featureledger[spark]' "
               "(Java 17 or newer must be on PATH) to run the Spark engine tests")
    if msg is None and shutil.which("java") is None:
        msg = ("Java is not on PATH; install Java 17 or newer (e.g. apt-get install "
               "openjdk-17-jre-headless) to run the Spark engine tests")
    if msg is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{msg} (CI must run every backend)")
        pytest.skip(msg)


# Small and quick for tests on a shared 2-core machine: few partitions, a small heap, and
# a JIT that compiles less (these JVMs live for a few minutes, not days).
SPARK_TEST_CONF = {
    "spark.driver.memory": "768m",
    "spark.default.parallelism": "2",
    "spark.sql.adaptive.coalescePartitions.initialPartitionNum": "2",
    "spark.driver.extraJavaOptions": "-XX:+UseSerialGC -XX:TieredStopAtLevel=1",
}


@pytest.fixture(scope="session")
def spark_engine():
    """The Spark engine in local mode; its session (one per process) serves every Spark
    test, including stores configured with ``offline_engine: {type: spark}``."""
    require_pyspark()
    from featureledger.offline.spark import SparkEngine

    engine = SparkEngine(master="local[2]", shuffle_partitions=2, conf=SPARK_TEST_CONF)
    # start the session now, with these settings, before any store does
    assert engine.spark is not None
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def duckdb_engine():
    """The DuckDB engine, one thread (built once per test session)."""
    from featureledger.offline.duckdb import DuckDBEngine

    engine = DuckDBEngine(threads=1)
    yield engine
    engine.close()


@pytest.fixture(scope="session", params=["duckdb", pytest.param("spark", marks=pytest.mark.spark)])
def engine(request):
    """Every offline engine in turn (each built once per test session)."""
    return request.getfixturevalue(f"{request.param}_engine")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    require_postgres()
    import sqlalchemy as sa

    schema = f"fl_test_{uuid.uuid4().hex[:12]}"
    base = f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/{PG_DB}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{base}?options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as c:
            c.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'registry.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def registry_url(request) -> str:
    """The registry URL of every registry backend in turn."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis URL on a database flushed before and after the test."""
    require_redis()
    import redis

    db = int(os.environ.get("FEATURELEDGER_TEST_REDIS_DB", "15"))
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db)
    client.flushdb()
    try:
        yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"
    finally:
        client.flushdb()
        client.close()


@pytest.fixture
def redis_namespace() -> Iterator[tuple[str, str]]:
    """A Redis URL and a key prefix unique to this test; keys under it are removed afterwards.

    Unlike ``redis_url`` nothing else in the database is flushed, so tests running on
    parallel workers against the same database cannot wipe each other's keys.
    """
    require_redis()
    import redis

    db = int(os.environ.get("FEATURELEDGER_TEST_REDIS_DB", "15"))
    prefix = f"fltest{uuid.uuid4().hex[:10]}"
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db)
    try:
        yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}", prefix
    finally:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i:i + 1000])
        client.close()


# -- offline retrieval: writing commits straight through the storage contract -------------


class CommitWriter:
    """Writes a table as one commit of a view (offline files + registry row), the way
    ingestion does, so retrieval tests control event times and commit order exactly."""

    def __call__(self, store, view: str, rows, *, version: int | None = None):
        import pyarrow as pa

        from featureledger.model.ids import new_id
        from featureledger.model.timeutil import now_us
        from featureledger.model.types import to_arrow
        from featureledger.registry.commits import CommitRecord

        rec = store.get_view(view, version)
        d = rec.definition
        table = rows if isinstance(rows, pa.Table) else pa.table(rows)
        ts_type = pa.timestamp("us", tz="UTC")
        fields = ([pa.field(k, to_arrow(t)) for k, t in d.join_keys.items()]
                  + [pa.field(d.timestamp_field, ts_type)]
                  + [pa.field(f.name, to_arrow(f.dtype)) for f in d.fields])
        table = table.select([f.name for f in fields]).cast(pa.schema(fields))
        last = store.registry.commits.list(view, rec.version, statuses=None)
        commit_time = max(now_us(), (last[-1].commit_time + 1) if last else 0)
        commit_id = new_id("cmt")
        n = table.num_rows
        table = table.append_column("_commit_id", pa.array([commit_id] * n, pa.string()))
        table = table.append_column("_commit_time", pa.array([commit_time] * n, ts_type))
        written = store.ctx.offline_store.write_commit(view, rec.version, commit_id, table)
        ts = table.column(d.timestamp_field).cast(pa.int64()).to_pylist()
        record = CommitRecord(
            commit_id=commit_id, view_name=view, view_version=rec.version,
            commit_time=commit_time, user="test", run_id=None, source={"kind": "test"},
            steps=[], row_count=n, rejected_count=0, validation={}, profile={},
            files=written.files, content_digest=written.content_digest,
            min_event_ts=min(ts) if ts else None, max_event_ts=max(ts) if ts else None)
        with store.registry.db.write() as conn:
            store.registry.commits.insert(conn, record)
        return record


@pytest.fixture(scope="session")
def write_commit() -> CommitWriter:
    """``write_commit(store, view, rows)``: one committed commit, returns its CommitRecord."""
    return CommitWriter()


# -- S3-compatible object storage: moto's server over HTTP on 127.0.0.1 --------------------
S3_BUCKET = "featureledger-test"
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                  "AWS_DEFAULT_REGION": "us-east-1"}


def require_s3_packages() -> None:
    """Skip (fail under CI) when s3fs or moto's server is not installed."""
    try:
        import moto.server  # noqa: F401
        import s3fs  # noqa: F401
    except ImportError as exc:
        msg = (f"the S3 tests need s3fs and moto[server] ({exc.name} is missing); install "
               "them with: pip install -e '.[dev]'")
        if os.environ.get("CI"):
            pytest.fail(f"{msg} (CI must run every backend)")
        pytest.skip(msg)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """The URL of a real S3 API (moto's ThreadedMotoServer) on 127.0.0.1, with a bucket
    ``featureledger-test``; the standard AWS variables hold its (dummy) credentials."""
    require_s3_packages()
    import logging

    from moto.server import ThreadedMotoServer

    # werkzeug logs every request line at INFO; the tests read values, not the access log
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    with pytest.MonkeyPatch.context() as mp:
        for k, v in S3_CREDENTIALS.items():
            mp.setenv(k, v)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            endpoint = f"http://{host}:{port}"
            import s3fs

            s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True).mkdir(S3_BUCKET)
            yield endpoint
        finally:
            server.stop()


@pytest.fixture
def s3_url(s3_endpoint) -> str:
    """``s3://featureledger-test/<unique prefix>``: each test's own part of the bucket."""
    return f"s3://{S3_BUCKET}/t-{uuid.uuid4().hex[:12]}"
