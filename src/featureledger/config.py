"""``featureledger.yaml``: the project's configuration.

Settings resolve in one fixed order: explicit arguments, then environment variables, then
the file. An environment variable ``FEATURELEDGER__SECTION__KEY`` overrides ``section.key``
(for example ``FEATURELEDGER__ONLINE_STORE__TYPE=redis``); ``FEATURELEDGER_REGISTRY`` is a
shorthand for the registry URL. Unknown keys are rejected, so a typo is an error, not a
silently ignored setting; so is a backend type that is not implemented (naming the ones that
are), since accepting it would quietly run something else. Relative paths are relative to the
file's folder.

>>> cfg = ProjectConfig.model_validate({"project": "demo"})
>>> cfg.online_store.type, cfg.offline_store.type
('sqlite', 'parquet')
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from featureledger.errors import ConfigError

CONFIG_FILE = "featureledger.yaml"
DATA_DIR = ".featureledger"

# A project name becomes a registry key, a folder of the offline store, part of a Redis key
# prefix and of SQLite table names, so it is kept to characters that are safe in all four.
_PROJECT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# top-level folders of the offline store's layout from before projects had folders
_RESERVED_PROJECTS = ("views", "datasets")


def check_project_name(name: object) -> str:
    """``name`` if it is a valid project name, else a ConfigError saying what is allowed.

    >>> check_project_name("fraud-team.v2")
    'fraud-team.v2'
    """
    if not isinstance(name, str) or not _PROJECT_RE.match(name):
        raise ConfigError(
            f"project name {name!r} is not valid; use 1 to 64 letters, digits, '_', '-' or "
            "'.', starting with a letter or digit (e.g. 'fraud' or 'team-a.search')")
    if name.lower() in _RESERVED_PROJECTS:
        raise ConfigError(f"project name {name!r} is reserved (the offline store uses that "
                          "folder name); pick another name")
    return name


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ParquetOfflineStoreConfig(_Config):
    type: Literal["parquet"] = "parquet"
    path: str = f"{DATA_DIR}/offline"
    """Folder holding commit files: <project>/views/<view>/v<version>/<commit>/..."""
    duckdb_memory_limit: str | None = None
    """Same as ``offline_engine.memory_limit`` (kept for existing files)."""
    duckdb_threads: int | None = None
    """Same as ``offline_engine.threads`` (kept for existing files)."""
    verify_digests: bool = False
    """Digest each commit's files against its content digest before retrieval or
    materialization reads them (a changed file is refused, not served); a file verified
    earlier in the process is digested again only when it changed on disk."""


class DuckDBEngineConfig(_Config):
    type: Literal["duckdb"] = "duckdb"
    memory_limit: str | None = None
    """DuckDB memory_limit for retrieval, windows, materialization and migrations (e.g.
    '4GB'); beyond it DuckDB spills to ``temp_directory``. Default: DuckDB's own."""
    threads: int | None = Field(default=None, ge=1)
    """DuckDB worker threads; default: one per core."""
    temp_directory: str | None = None
    """Where DuckDB spills; default: the system temp folder."""


class SparkEngineConfig(_Config):
    type: Literal["spark"] = "spark"
    master: str = "local[2]"
    """Spark master URL: ``local[N]`` runs Spark in this process with N cores; a cluster
    URL needs every worker to see the offline store's files at the same paths."""
    app_name: str = "featureledger"
    """Spark application name (shown in the Spark UI and cluster manager)."""
    shuffle_partitions: int = Field(default=4, ge=1)
    """``spark.sql.shuffle.partitions``: small suits local mode; raise it on a cluster."""
    conf: dict[str, str] = Field(default_factory=dict)
    """Further Spark settings (e.g. ``spark.driver.memory: 2g``), applied when the
    process's Spark session is created; they cannot change a session already running."""


OfflineEngineConfig = Annotated[
    Union[DuckDBEngineConfig, SparkEngineConfig], Field(discriminator="type")
]
ENGINE_CONFIGS = (DuckDBEngineConfig, SparkEngineConfig)


class S3OfflineStoreConfig(_Config):
    """The offline store on S3-compatible object storage (AWS S3, MinIO, Ceph, moto).

    Credentials are never settings: they come from the standard AWS sources (the
    ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` environment variables, a profile in
    ``~/.aws``, an instance role), so nothing secret is written to featureledger.yaml or
    the registry.
    """

    type: Literal["s3"] = "s3"
    url: str
    """Where the store lives, ``s3://bucket/prefix``; projects get folders under it."""
    endpoint_url: str | None = None
    """S3 API endpoint of a non-AWS server (e.g. ``http://127.0.0.1:9000``); default AWS."""
    region: str | None = None
    """Region of the bucket; default: the AWS configuration's (``AWS_DEFAULT_REGION``)."""
    profile: str | None = None
    """Named profile of ``~/.aws/credentials`` to sign with; default: the standard chain."""
    verify_digests: bool = False
    """Digest each commit's objects against its content digest before reading them (a
    changed object is refused, not served); an object verified earlier in the process is
    digested again only when its ETag, size or LastModified changed."""
    duckdb_memory_limit: str | None = None
    """Same as ``offline_engine.memory_limit`` (as on the parquet store)."""
    duckdb_threads: int | None = None
    """Same as ``offline_engine.threads`` (as on the parquet store)."""

    @field_validator("url")
    @classmethod
    def _s3_url(cls, v: str) -> str:
        scheme, sep, rest = v.partition("://")
        bucket = rest.split("/", 1)[0]
        if scheme not in ("s3", "s3a") or not sep or not bucket:
            raise PydanticCustomError("s3_url", "{message}", {"message": (
                f"{v!r} is not an S3 URL; write it as s3://bucket or s3://bucket/prefix")})
        return "s3://" + rest.rstrip("/")

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise PydanticCustomError("endpoint_url", "{message}", {"message": (
                f"endpoint_url {v!r} must be an http:// or https:// URL, e.g. "
                "http://127.0.0.1:9000")})
        return v


# Only what is implemented is accepted: a type that is not is refused (naming the ones that
# are) rather than silently running another backend. Spark is an offline *engine* over the
# same files (DESIGN.md section 4), not a place where data lives, so ``offline_store: spark``
# is refused with a pointer to ``offline_engine``.
OfflineStoreConfig = Annotated[
    Union[ParquetOfflineStoreConfig, S3OfflineStoreConfig], Field(discriminator="type")
]


class SqliteOnlineStoreConfig(_Config):
    type: Literal["sqlite"] = "sqlite"
    path: str = f"{DATA_DIR}/online.db"
    """SQLite database file for online values."""


class RedisOnlineStoreConfig(_Config):
    type: Literal["redis"] = "redis"
    url: str = "redis://127.0.0.1:6379/0"
    """Redis URL."""
    key_prefix: str | None = None
    """Prefix of every key this project writes; default ``fl:<project>``, so projects
    sharing a server (and database) never see each other's keys."""
    timeout_s: float = 0.5
    """Socket connect/read timeout in seconds."""
    retries: int = 2
    """Retries of a failed call before a BackendUnavailableError."""


OnlineStoreConfig = Annotated[
    Union[SqliteOnlineStoreConfig, RedisOnlineStoreConfig], Field(discriminator="type")
]

# section -> {type: what it is}, for messages naming what exists
AVAILABLE_TYPES: dict[str, dict[str, str]] = {
    "offline_store": {"parquet": "Parquet files on local disk, queried with DuckDB",
                      "s3": "Parquet objects on S3-compatible storage (pip install "
                            "'featureledger[s3]'), queried with DuckDB"},
    "online_store": {"sqlite": "embedded SQLite file", "redis": "Redis server"},
    "offline_engine": {"duckdb": "DuckDB, in process",
                       "spark": "Apache Spark (local mode or a cluster; the 'spark' extra)"},
}
# (section, type) -> why it is refused although users may expect it
NOT_AVAILABLE_YET: dict[tuple[str, str], str] = {
    ("offline_store", "spark"): (
        "Spark is an offline engine, not an offline store: the data stays in the Parquet "
        "offline store and Spark queries it. Set 'offline_engine: {type: spark}' and keep "
        "'offline_store: {type: parquet}'"),
}
REGISTRY_BACKENDS = ("sqlite", "postgresql")


def _check_type(section: str, value: Any) -> Any:
    """Refuse a backend type that is not implemented, naming the ones that are."""
    if not isinstance(value, dict):
        return value
    known = AVAILABLE_TYPES[section]
    if "type" not in value:  # the embedded default, as when the section is left out
        return {"type": next(iter(known)), **value}
    kind = value["type"]
    if kind in known:
        return value
    options = "; ".join(f"{k!r} ({v})" for k, v in known.items())
    why = NOT_AVAILABLE_YET.get((section, str(kind)), f"type {kind!r} is not implemented")
    raise PydanticCustomError("not_available", "{message}", {
        "message": f"{why}. Available {section} types: {options}"})


class OpenLineageConfig(_Config):
    enabled: bool = False
    """Emit OpenLineage events."""
    namespace: str = "featureledger"
    """Job namespace of emitted events."""
    transport: dict[str, Any] = Field(default_factory=lambda: {"type": "console"})
    """openlineage-python transport config: console, file (log_file_path) or http (url)."""

    @field_validator("transport")
    @classmethod
    def _transport(cls, v: dict[str, Any]) -> dict[str, Any]:
        # the client would quietly fall back to the console without a type
        if not isinstance(v.get("type"), str) or not v["type"]:
            raise PydanticCustomError("transport_type", "{message}", {"message": (
                "the transport needs a type: console, file (with log_file_path) or http "
                "(with url), e.g. {type: http, url: http://localhost:5000}")})
        return v

    @model_validator(mode="after")
    def _transport_known(self) -> OpenLineageConfig:
        # checked only when events are on: the client is an optional extra, imported lazily
        if not self.enabled:
            return self
        try:
            from openlineage.client.transport import get_default_factory
        except ImportError:
            return self  # the emitter says which extra to install
        known = sorted(get_default_factory().transports)
        if self.transport["type"] not in known:
            raise PydanticCustomError("not_available", "{message}", {"message": (
                f"transport type {self.transport['type']!r} is not known to the installed "
                f"openlineage-python; use one of: {', '.join(known)}")})
        return self


class MlflowConfig(_Config):
    tracking_uri: str | None = None
    """MLflow tracking URI; default: MLflow's own resolution (MLFLOW_TRACKING_URI)."""
    autolink: bool = True
    """Link featureledger runs to the active MLflow run automatically."""


class ServingConfig(_Config):
    cache: bool = False
    """Keep decoded online records in an in-process cache (invalidated on every change)."""
    cache_max_entries: int = Field(default=100_000, ge=1)
    """Cached records per view version before that version's cache starts over."""
    poll_interval_s: float = Field(default=0.5, ge=0)
    """How often to look for changes made by other processes (0: on every read)."""
    push_flush_rows: int = Field(default=10_000, ge=1)
    """Pushed rows buffered per view version before they land offline as one commit."""
    push_flush_interval_s: float = Field(default=5.0, ge=0)
    """Oldest buffered push age (seconds) that triggers a flush on the next push."""


class SourcesConfig(_Config):
    allowed_prefixes: list[str] = Field(default_factory=list)
    """Folders outside the repository whose files may be ingested (absolute, ``~/...``,
    or relative to the repository, e.g. ``../shared-data``). Any other path outside the
    repository, however it is written (``..``, a symbolic link), is refused."""


class BoundsConfig(_Config):
    value_chars: int = Field(default=200, ge=8, le=100_000)
    """Characters of a data value shown in an error message, a validation report sample
    or the CLI; a longer value is cut and its full length shown beside it."""
    profile_chars: int = Field(default=200, ge=8, le=100_000)
    """Characters kept of a string in a commit's statistics profile (min, max, top
    values); the full length of a value that was cut is recorded beside it."""


class ServerConfig(_Config):
    host: str = "127.0.0.1"
    port: int = 6566
    tokens: dict[str, str] = Field(default_factory=dict)
    """Bearer token -> principal name, in plain text, for a project without an access
    policy; with a policy, tokens are salted hashes in ``policy.yaml`` instead
    (``featureledger policy migrate-tokens`` moves these there). Some token is required to
    bind a non-loopback address."""
    public_docs: bool = False
    """Serve ``/docs`` and ``/openapi.json`` without a token even when tokens are set (they
    describe the API, not the data); by default they need one like every other route."""
    max_body_bytes: int = Field(default=8 * 2**20, ge=1024)
    """Largest request body (bytes); a larger one is refused with 413 before it is read."""
    body_budget_bytes: int = Field(default=64 * 2**20, ge=1024)
    """Request bodies held at once across all requests; a request that would go over it
    is refused with 503 and Retry-After (bounds the memory many large bodies can take)."""
    body_timeout_s: float = Field(default=10.0, gt=0)
    """Time a client has to send a request's line and headers (from its first byte, or
    from connecting), and again its body once the headers arrived; a request still
    incomplete then is answered 408 and its connection closed."""
    max_header_bytes: int = Field(default=64 * 1024, ge=1024)
    """Longest request line and headers; longer ones are answered 431 and the connection
    closed."""
    max_entity_rows: int = Field(default=10_000, ge=1)
    """Entity rows (keys) in one online-features request; more are refused with 413."""
    max_push_rows: int = Field(default=10_000, ge=1)
    """Rows in one push; more are refused with 413."""
    workers: int = Field(default=4, ge=1)
    """Threads running online reads; as many again run pushes and catalog reads."""
    queue_size: int = Field(default=64, ge=0)
    """Requests that may wait for a busy worker pool; when full, a request is refused with
    503 and Retry-After at once."""
    request_timeout_s: float = Field(default=1.0, gt=0)
    """The server's bound: a read (online features, catalog) is answered within this long
    after its body arrived, with 503 if a backend has not answered by then; no request
    waits longer than this for a worker."""
    breaker_failures: int = Field(default=3, ge=1)
    """Consecutive failures of a backend (online store, registry) that open its circuit
    breaker: requests needing it then fail at once with 503."""
    breaker_reset_s: float = Field(default=0.5, gt=0)
    """How long an open breaker refuses before one trial request may go through."""
    health_interval_s: float = Field(default=0.5, gt=0)
    """How often the background health checks probe each backend (``/health`` answers
    from their last result; a probe also closes an open breaker)."""

    @model_validator(mode="after")
    def _budget_holds_a_body(self) -> ServerConfig:
        if self.body_budget_bytes < self.max_body_bytes:
            raise PydanticCustomError("budget", "{message}", {"message": (
                f"body_budget_bytes ({self.body_budget_bytes}) is below max_body_bytes "
                f"({self.max_body_bytes}), so a body of the largest allowed size could "
                "never be accepted; raise body_budget_bytes or lower max_body_bytes")})
        return self


class CompactionConfig(_Config):
    auto_after_commits: int | None = Field(default=64, ge=2)
    """Compact a view version after an ingestion once this many of its commits are not
    in a compacted segment (None: only ``featureledger compact``)."""
    target_file_rows: int = Field(default=1_000_000, ge=1)
    """Rows per compacted file: each file holds a contiguous range of join keys."""
    row_group_rows: int = Field(default=131_072, ge=1)
    """Rows per Parquet row group of a compacted file (sorted by event time, so smaller
    groups let the engine skip more of what no entity row can reach)."""


class WebhookConfig(_Config):
    url: str
    """Where alerts are POSTed as JSON (http:// or https://)."""
    timeout_s: float = Field(default=2.0, gt=0)
    """Time allowed for one attempt (connect and answer)."""
    retries: int = Field(default=3, ge=0)
    """Attempts after the first one, for an error or a 5xx/429 answer."""
    backoff_s: float = Field(default=0.5, ge=0)
    """Wait before the first retry; doubled before each next one."""
    deadline_s: float = Field(default=15.0, gt=0)
    """Time after which an alert's delivery is given up, retries or not."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra request headers (e.g. an authorization token)."""

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("quality.webhook.url must start with http:// or https://")
        return value


class QualityConfig(_Config):
    log_alerts: bool = True
    """Write every new alert to the ``featureledger.quality`` logger (warning/error)."""
    webhook: WebhookConfig | None = None
    """POST every new alert here, off the ingestion path (see quality/alerts.py)."""
    feature_log_sample_rate: float = Field(default=0.0, ge=0, le=1)
    """Share of online requests whose served values are logged for skew checks."""
    feature_log_batch_rows: int = Field(default=1000, ge=1)
    """Sampled rows written per registry transaction (never one write per request)."""
    feature_log_flush_interval_s: float = Field(default=5.0, ge=0)
    """A partial batch is written at the latest this long after its first row."""


class ProjectConfig(_Config):
    project: str = "default"
    """Project name: scopes the registry, the offline store's folders and the online keys,
    so several projects can share one database, bucket or Redis server."""
    registry: str = f"sqlite:///{DATA_DIR}/registry.db"
    """SQLAlchemy URL of the registry (sqlite:///... or postgresql+psycopg://...)."""
    offline_store: OfflineStoreConfig = Field(default_factory=ParquetOfflineStoreConfig)
    offline_engine: OfflineEngineConfig = Field(default_factory=DuckDBEngineConfig)
    """The offline engine: ``duckdb`` (embedded, the default) or ``spark``."""
    online_store: OnlineStoreConfig = Field(default_factory=SqliteOnlineStoreConfig)
    openlineage: OpenLineageConfig = Field(default_factory=OpenLineageConfig)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    sources: SourcesConfig = Field(default_factory=SourcesConfig)
    bounds: BoundsConfig = Field(default_factory=BoundsConfig)
    compaction: CompactionConfig = Field(default_factory=CompactionConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    """Alerts (log, webhook) and the sampled online feature log."""
    root: Path = Field(default=Path("."), exclude=True)
    """Folder of the config file; relative paths resolve against it."""

    @field_validator("project")
    @classmethod
    def _valid_project(cls, value: str) -> str:
        return check_project_name(value)  # a ValueError: reported with the field's name

    @field_validator("offline_store", mode="before")
    @classmethod
    def _offline_type(cls, v: Any) -> Any:
        return _check_type("offline_store", v)

    @field_validator("online_store", mode="before")
    @classmethod
    def _online_type(cls, v: Any) -> Any:
        return _check_type("online_store", v)

    @field_validator("offline_engine", mode="before")
    @classmethod
    def _engine_type(cls, v: Any) -> Any:
        return _check_type("offline_engine", v)

    @field_validator("registry")
    @classmethod
    def _registry_backend(cls, v: str) -> str:
        scheme, sep, _ = v.partition("://")
        backend = scheme.split("+")[0].lower()
        if not sep or backend not in REGISTRY_BACKENDS:
            raise PydanticCustomError("not_available", "{message}", {"message": (
                f"registry URL {v!r} names no available backend; use "
                "sqlite:///path/registry.db (embedded) or postgresql+psycopg://user@host/db")})
        return v

    def resolve(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else (self.root / p)

    @property
    def registry_url(self) -> str:
        url = self.registry
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and url != prefix + ":memory:":
            return prefix + str(self.resolve(url[len(prefix):]).absolute())
        return url


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if environ.get("FEATURELEDGER_REGISTRY"):
        out["registry"] = environ["FEATURELEDGER_REGISTRY"]
    for key, value in environ.items():
        if not key.startswith("FEATURELEDGER__"):
            continue
        parts = [p.lower() for p in key[len("FEATURELEDGER__"):].split("__") if p]
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(value) if value else value
    return out


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            # switching a store's type drops the other type's keys
            if "type" in v and v["type"] != out[k].get("type"):
                out[k] = dict(v)
            else:
                out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


_UNION = object()


def _known_keys(error: Any) -> str:
    """For an unknown key, the keys its section does accept (so a typo can be fixed)."""
    if error["type"] != "extra_forbidden":
        return ""
    model: Any = ProjectConfig
    for part in error["loc"][:-1]:
        if model is _UNION:  # the tag of a discriminated union: the member of that type
            members = [m for m in (SqliteOnlineStoreConfig, RedisOnlineStoreConfig,
                                   ParquetOfflineStoreConfig, S3OfflineStoreConfig,
                                   *ENGINE_CONFIGS)
                       if m.model_fields["type"].default == part]
            model = members[0] if members else None
        elif isinstance(part, str) and part in model.model_fields:
            ann = model.model_fields[part].annotation
            model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else _UNION
        else:
            model = None
        if model is None:
            return ""
    names = [n for n, f in model.model_fields.items() if not f.exclude]
    return f" (known keys: {', '.join(names)})"


def load_config(path: str | Path | None = None, *, overrides: dict[str, Any] | None = None,
                environ: dict[str, str] | None = None) -> ProjectConfig:
    """Load ``featureledger.yaml`` from ``path`` (a file or the folder holding it)."""
    p = Path(path) if path is not None else Path.cwd()
    file = p / CONFIG_FILE if p.is_dir() else p
    data: dict[str, Any] = {}
    if file.exists():
        try:
            data = yaml.safe_load(file.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{file} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{file} must hold a mapping of settings, not {type(data).__name__}")
    elif path is not None and not p.is_dir():
        raise ConfigError(f"config file {file} does not exist; run 'featureledger init' to make one")
    data = _deep_merge(data, _env_overrides(dict(os.environ if environ is None else environ)))
    if "root" in data:
        # root is where the file is; a value written in it would be silently replaced
        raise ConfigError(
            f"'root' in {file} is not a setting: relative paths always resolve against the "
            "folder holding featureledger.yaml; remove it, or move the file"
        )
    data = _deep_merge(data, overrides or {})
    try:
        cfg = ProjectConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" + _known_keys(e)
            for e in exc.errors()
        )
        raise ConfigError(f"invalid configuration in {file}: {problems}") from None
    return cfg.model_copy(update={"root": file.parent.absolute()})
