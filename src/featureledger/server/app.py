"""The HTTP feature server (FastAPI): online features, push, catalog reads, health, metrics.

Responses are JSON rendered by orjson. The online-features endpoint is answered ahead of
the framework's middleware and router (``_OnlinePath``): it reads its body with orjson
and checks it by hand (its schema is still published in the OpenAPI document), so the hot
path builds no pydantic objects per request. Store calls never run on the event loop: a
request whose keys are all in the in-process cache is answered from memory there, every
other read runs on a small bounded thread pool. Errors are JSON ``{"error": {"code", "message"}}`` with the
status of the featureledger error class (404 unknown names, 422 bad input, 503 a backend
down, ...).

Shutdown drains: on SIGTERM or SIGINT ``serve`` stops accepting connections, lets the
requests in flight finish (up to ``DRAIN_TIMEOUT_S``), lands every buffered push offline
(the app's lifespan shutdown, so any ASGI server that runs the app does the same) and
returns, so ``featureledger serve`` closes the store and exits 0. A push answered before
the signal is durable in the push log either way; draining makes it a commit too.

Authentication: with ``server.tokens`` configured (token -> principal), every endpoint but
``/health`` and the OpenAPI document needs ``Authorization: Bearer <token>``; without
tokens the server only binds a loopback address (``serve`` refuses anything else).
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal

import orjson
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from featureledger.errors import FeatureLedgerError, RetrievalError
from featureledger.server.metrics import MetricsMiddleware, ServerMetrics

_log = logging.getLogger("featureledger.server")
DRAIN_TIMEOUT_S = 30.0  # in-flight requests get this long after a stop signal
_OPEN_PATHS = frozenset({"/health", "/openapi.json", "/docs", "/docs/oauth2-redirect",
                         "/redoc"})


class OrjsonResponse(JSONResponse):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY
                            | orjson.OPT_NON_STR_KEYS)


# -- documented shapes (OpenAPI only: the hot path does not build these) -------------------
class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


JsonScalar = int | float | str | bool | None


class OnlineFeaturesRequest(BaseModel):
    """Feature references (or a feature set) and entity key columns."""

    features: list[str] | None = Field(
        default=None, description="References such as 'driver_stats:trips' or "
        "'driver_stats@2:trips'.")
    feature_set: str | None = Field(default=None, description="NAME or NAME@VERSION.")
    entities: dict[str, list[JsonScalar]] = Field(
        description="Join key -> values, one per entity row.")
    full_feature_names: bool = False
    fill_defaults: bool = False


class FeatureColumn(BaseModel):
    name: str
    reference: str
    version: int
    values: list[Any]
    statuses: list[Literal["PRESENT", "NULL", "NOT_FOUND", "OUTSIDE_TTL", "DEFAULT"]]
    commits: list[str | None]
    event_timestamps: list[int | None]


class OnlineFeaturesResponse(BaseModel):
    entities: dict[str, list[Any]]
    features: list[FeatureColumn]


class PushRequest(BaseModel):
    rows: list[dict[str, Any]] = Field(min_length=1)
    flush: bool = Field(default=False, description="Land the rows (with any rows buffered "
                        "for the same view version) in a commit before answering.")


class PushResponse(BaseModel):
    commit_id: str = Field(description="The commit the rows are in: pending until it "
                           "lands, then committed (the rows are durable either way).")


class Definition(BaseModel):
    kind: str
    name: str
    version: int
    status: str
    definition_hash: str
    created_at: int
    created_by: str
    stale: bool
    definition: dict[str, Any]


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    checks: dict[str, Any]


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "The body is not valid JSON."},
    401: {"model": ErrorResponse, "description": "Missing or unknown bearer token."},
    404: {"model": ErrorResponse, "description": "Unknown view, feature or feature set."},
    422: {"model": ErrorResponse, "description": "The request cannot be answered as given."},
    503: {"model": ErrorResponse, "description": "A backend store is unavailable."},
}


def _error(status: int, code: str, message: str) -> OrjsonResponse:
    return OrjsonResponse({"error": {"code": code, "message": message}}, status_code=status)


def _record(rec: Any) -> dict[str, Any]:
    return {"kind": rec.kind, "name": rec.name, "version": rec.version, "status": rec.status,
            "definition_hash": rec.definition_hash, "created_at": rec.created_at,
            "created_by": rec.created_by, "stale": rec.stale,
            "definition": rec.definition.to_dict()}


def _parse_online(body: bytes) -> dict[str, Any]:
    """Check the online-features body by hand (cheaper than a model per request)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise StarletteHTTPException(
            400, f"the request body is not valid JSON ({exc}); send an object like "
            "{\"features\": [...], \"entities\": {...}}") from None
    if not isinstance(data, dict):
        raise RetrievalError("the request body must be a JSON object")
    unknown = set(data) - set(OnlineFeaturesRequest.model_fields)
    if unknown:
        raise RetrievalError(f"unknown request field(s) {sorted(unknown)}; allowed: "
                             f"{sorted(OnlineFeaturesRequest.model_fields)}")
    features = data.get("features")
    if features is not None and (not isinstance(features, list)
                                 or not all(isinstance(f, str) for f in features)):
        raise RetrievalError("'features' must be a list of reference strings")
    fs = data.get("feature_set")
    if fs is not None and not isinstance(fs, str):
        raise RetrievalError("'feature_set' must be a string such as 'NAME' or 'NAME@2'")
    entities = data.get("entities")
    if not isinstance(entities, dict) or not all(
            isinstance(v, list) and all(x is None or isinstance(x, (int, float, str, bool))
                                        for x in v) for v in entities.values()):
        raise RetrievalError("'entities' must map each join key to a list of values, e.g. "
                             "{\"driver_id\": [1001, 1002]}")
    for flag in ("full_feature_names", "fill_defaults"):
        if not isinstance(data.get(flag, False), bool):
            raise RetrievalError(f"'{flag}' must be true or false")
    return data


class _AuthMiddleware:
    """Bearer tokens -> principal (``scope["state"]["principal"]``); 401 otherwise."""

    def __init__(self, app: Any, tokens: dict[str, str], metrics: ServerMetrics) -> None:
        self.app = app
        self.tokens = [(k.encode(), v) for k, v in tokens.items()]
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not self.tokens or scope["path"] in _OPEN_PATHS:
            if scope["type"] == "http":
                scope.setdefault("state", {})["principal"] = "anonymous"
            await self.app(scope, receive, send)
            return
        header = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value
                break
        scheme, _, token = header.partition(b" ")
        principal = None
        if scheme.lower() == b"bearer" and token.strip():
            for known, who in self.tokens:
                if hmac.compare_digest(known, token.strip()):
                    principal = who
                    break
        if principal is None:
            self.metrics.errors.labels("auth", "unauthenticated").inc()
            resp = _error(401, "unauthenticated",
                          "missing or unknown bearer token; send 'Authorization: Bearer "
                          "<token>' with a token listed under server.tokens")
            resp.headers["WWW-Authenticate"] = "Bearer"
            await resp(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


class _OnlinePath:
    """``POST /features/online`` without the framework's per-request machinery.

    The feature server answers this route before Starlette's middleware stack and router
    (FastAPI still declares it, so it is in the OpenAPI document, and the router's handler
    has the same behaviour), with the same bearer-token check, error shape and metrics as
    every other route. The body is parsed on the event loop (microseconds of CPU, no
    I/O). With the cache on, ``get_online_features_nowait`` answers a request whose keys
    are all cached without leaving the loop: it is only dict lookups, and it declines
    (returns None) whenever a store or the registry would be touched, so it never blocks.
    Everything else runs on a small bounded thread pool: store reads release the GIL
    while they wait on SQLite or Redis, so a few threads overlap them, and more threads
    would only contend for the GIL.
    """

    PATH = "/features/online"
    WORKERS = 4

    def __init__(self, online: Any, tokens: dict[str, str], metrics: ServerMetrics) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.online = online
        self.tokens = [(k.encode(), v) for k, v in tokens.items()]
        self.metrics = metrics
        self.pool = ThreadPoolExecutor(max_workers=self.WORKERS,
                                       thread_name_prefix="fl-online")
        self._latency = metrics.latency.labels(self.PATH, "POST")
        self._counts: dict[int, Any] = {}

    def principal(self, scope: Any) -> str | None:
        if not self.tokens:
            return "anonymous"
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                token = token.strip()
                if scheme.lower() == b"bearer" and token:
                    for known, who in self.tokens:
                        if hmac.compare_digest(known, token):
                            return who
                return None
        return None

    def read(self, data: dict[str, Any]) -> bytes:
        """The full read (may block on a store): run on the thread pool."""
        resp = self.online.get_online_features(
            data.get("features"), data["entities"], feature_set=data.get("feature_set"),
            full_feature_names=data.get("full_feature_names", False),
            fill_defaults=data.get("fill_defaults", False))
        return orjson.dumps(resp.to_json_dict(), option=orjson.OPT_SERIALIZE_NUMPY)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        import asyncio

        t0 = time.perf_counter()
        headers = [(b"content-type", b"application/json")]
        scope.setdefault("state", {})
        who = self.principal(scope)
        status = 200
        if who is None:
            self.metrics.errors.labels("auth", "unauthenticated").inc()
            status, payload = 401, _error_bytes(
                "unauthenticated", "missing or unknown bearer token; send 'Authorization: "
                "Bearer <token>' with a token listed under server.tokens")
            headers.append((b"www-authenticate", b"Bearer"))
        else:
            scope["state"]["principal"] = who
            chunks = []
            more = True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunks.append(message.get("body", b""))
                more = message.get("more_body", False)
            try:
                data = _parse_online(b"".join(chunks))
                resp = self.online.get_online_features_nowait(
                    data.get("features"), data["entities"],
                    feature_set=data.get("feature_set"),
                    full_feature_names=data.get("full_feature_names", False),
                    fill_defaults=data.get("fill_defaults", False))
                if resp is not None:
                    payload = orjson.dumps(resp.to_json_dict(),
                                           option=orjson.OPT_SERIALIZE_NUMPY)
                else:
                    payload = await asyncio.get_running_loop().run_in_executor(
                        self.pool, self.read, data)
            except FeatureLedgerError as exc:
                self.metrics.errors.labels(self.PATH, exc.code).inc()
                status, payload = exc.http_status, _error_bytes(exc.code, str(exc))
            except StarletteHTTPException as exc:
                self.metrics.errors.labels(self.PATH, "invalid_json").inc()
                status, payload = exc.status_code, _error_bytes("invalid_json",
                                                                str(exc.detail))
            except Exception as exc:  # a bug: answer in the documented shape, and log it
                _log.exception("online features request failed")
                self.metrics.errors.labels(self.PATH, "internal_error").inc()
                status, payload = 500, _error_bytes(
                    "internal_error", f"the server failed: {type(exc).__name__}: {exc}; "
                    "see the server log")
        headers.append((b"content-length", str(len(payload)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        counter = self._counts.get(status)
        if counter is None:
            counter = self._counts[status] = self.metrics.requests.labels(
                self.PATH, "POST", str(status))
        counter.inc()
        self._latency.observe(time.perf_counter() - t0)


def _error_bytes(code: str, message: str) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message}})


class FeatureServerApp(FastAPI):
    """The FastAPI app, with ``POST /features/online`` answered ahead of its middleware."""

    online_path: _OnlinePath | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        fast = self.online_path
        if fast is not None and scope["type"] == "http" and scope["path"] == fast.PATH \
                and scope["method"] == "POST":
            await fast(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(store: Any, *, title: str = "featureledger feature server") -> FastAPI:
    """The ASGI app serving ``store`` (a FeatureStore)."""
    from featureledger import __version__

    online = store.online
    tokens: dict[str, str] = dict(store.config.server.tokens)
    metrics = ServerMetrics(lambda: online.cache.stats() if online.cache is not None else None)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        # the server has stopped taking requests and the ones in flight are done: land
        # what is buffered now, so a stopped server leaves commits, not only log segments
        try:
            await run_in_threadpool(online.flush)
        except Exception:  # the rows stay in the push log and land at the next start
            _log.exception("buffered pushes could not land at shutdown; they stay in the "
                           "push log and land when the store next opens")
        fast.pool.shutdown(wait=True)

    app = FeatureServerApp(
        title=title, version=__version__, default_response_class=OrjsonResponse,
        description="Online feature vectors with per-value status, version and commit; "
        "catalog reads; health and Prometheus metrics.", lifespan=lifespan)
    app.state.store = store
    app.state.metrics = metrics
    fast = app.online_path = _OnlinePath(online, tokens, metrics)

    def online_handler(body: bytes) -> bytes:
        return fast.read(_parse_online(body))

    # middleware added last runs first: metrics -> auth -> FastAPI
    app.add_middleware(_AuthMiddleware, tokens=tokens, metrics=metrics)
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    @app.exception_handler(FeatureLedgerError)
    async def _fl_error(request: Request, exc: FeatureLedgerError) -> OrjsonResponse:
        route = getattr(request.scope.get("route"), "path", request.url.path)
        metrics.errors.labels(route, exc.code).inc()
        return _error(exc.http_status, exc.code, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError) -> OrjsonResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                             for e in exc.errors())
        return _error(422, "invalid_request", f"the request is not valid: {problems}")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> OrjsonResponse:
        code = "invalid_json" if exc.status_code == 400 else "http_error"
        return _error(exc.status_code, code, str(exc.detail))

    online_schema = OnlineFeaturesRequest.model_json_schema()

    @app.post("/features/online", response_model=None, tags=["online"],
              summary="Feature vectors with per-value status, version and commit",
              responses={200: {"model": OnlineFeaturesResponse}, **_ERRORS},
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": online_schema}}}})
    async def online_features(request: Request) -> Response:
        # answered by _OnlineFastPath before routing; kept for the OpenAPI document and as
        # the same behaviour for any caller that reaches the router directly
        body = await run_in_threadpool(online_handler, await request.body())
        return Response(body, media_type="application/json")

    @app.post("/push/{view}", response_model=PushResponse, tags=["online"],
              summary="Write rows online now, durable before the answer; they land "
              "offline as a commit (at once with flush)",
              responses=_ERRORS)
    async def push(view: str, body: PushRequest) -> dict[str, Any]:
        commit_id = await run_in_threadpool(online.push, view, body.rows, flush=body.flush)
        return {"commit_id": commit_id}

    @app.get("/catalog/{kind}", response_model=list[Definition], tags=["catalog"],
             summary="Latest version of every definition of a kind", responses=_ERRORS)
    async def catalog(kind: Literal["entities", "views", "feature-sets"]) -> Any:
        kinds = {"entities": "entity", "views": "feature_view", "feature-sets": "feature_set"}
        recs = await run_in_threadpool(store.list, kinds[kind])
        return OrjsonResponse([_record(r) for r in recs])

    @app.get("/catalog/{kind}/{name}", response_model=Definition, tags=["catalog"],
             summary="One definition (latest version unless 'version' is given)",
             responses=_ERRORS)
    async def definition(kind: Literal["entities", "views", "feature-sets"], name: str,
                         version: int | None = Query(
                             default=None, ge=1, le=2**31 - 1,
                             description="A version number; the latest when omitted.")
                         ) -> Any:
        kinds = {"entities": "entity", "views": "feature_view", "feature-sets": "feature_set"}
        rec = await run_in_threadpool(store.registry.definitions.get, kinds[kind], name,
                                      version)
        return OrjsonResponse(_record(rec))

    @app.get("/catalog/{kind}/{name}/versions", response_model=list[Definition],
             tags=["catalog"], summary="Every version of a definition", responses=_ERRORS)
    async def versions(kind: Literal["entities", "views", "feature-sets"], name: str) -> Any:
        kinds = {"entities": "entity", "views": "feature_view", "feature-sets": "feature_set"}
        recs = await run_in_threadpool(store.versions, name, kinds[kind])
        return OrjsonResponse([_record(r) for r in recs])

    @app.get("/health", response_model=Health, tags=["ops"],
             summary="Registry, offline and online store reachability; cache statistics",
             responses={503: {"model": Health, "description": "A check failed."}})
    async def health() -> Any:
        checks = await run_in_threadpool(online.health)
        ok = all(checks[k]["ok"] for k in ("registry", "online_store", "offline_store"))
        return OrjsonResponse({"status": "ok" if ok else "degraded", "checks": checks},
                              status_code=200 if ok else 503)

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics",
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
                        401: _ERRORS[401]})
    async def prometheus() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            doc = get_openapi(title=app.title, version=app.version,
                              description=app.description, routes=app.routes)
            doc.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"}}
            if tokens:
                for path, ops in doc["paths"].items():
                    if path not in _OPEN_PATHS:
                        for op in ops.values():
                            op["security"] = [{"bearer": []}]
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def check_bind(host: str, tokens: dict[str, str]) -> None:
    """Refuse to listen on a non-loopback address without authentication."""
    import ipaddress

    from featureledger.errors import ConfigError

    if tokens:
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise ConfigError(
            f"refusing to serve on {host!r} without authentication: anyone who can reach it "
            "could read features. Add tokens under server.tokens in featureledger.yaml "
            "(token: principal), or bind 127.0.0.1"
        )


def serve(store: Any, host: str | None = None, port: int | None = None, *,
          log_level: str = "warning") -> None:
    """Run the server with uvicorn until SIGTERM or SIGINT, then drain and return.

    Raises ``StorageError`` if buffered pushes could not land while draining (they stay
    in the push log and land when the store next opens), ``StateError`` if the server
    could not start.
    """
    import gc
    import importlib.util

    import uvicorn

    from featureledger.errors import StateError, StorageError

    cfg = store.config.server
    host = host or cfg.host
    port = port if port is not None else cfg.port
    check_bind(host, cfg.tokens)
    # uvloop and httptools (the server extra) when installed: a faster event loop and
    # HTTP parser; uvicorn's pure-Python fallbacks otherwise. No access log: a line per
    # request costs more than the read it logs (the metrics count every request).
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    app = create_app(store)
    # Everything alive now (modules, the app, definitions, drivers: about 100k objects)
    # lives as long as the server; moved out of the collector's reach, a full collection
    # no longer walks it, which takes tens of milliseconds off the worst requests.
    gc.collect()
    gc.freeze()
    server = uvicorn.Server(uvicorn.Config(
        app, host=host, port=port, log_level=log_level, access_log=False, loop=loop,
        http=http, timeout_graceful_shutdown=int(DRAIN_TIMEOUT_S)))
    with _stop_signals_return():
        server.run()
    if not server.started:
        raise StateError(f"the feature server could not start on {host}:{port} (see the "
                         "log above); is the port already in use?")
    online = store.online
    left = online.pusher.buffer.pending_rows
    if left:
        raise StorageError(
            f"{left} pushed row(s) could not land offline while the server stopped "
            f"({online.pusher.buffer.last_error}); they are durable in the push log "
            f"under {online.pusher.log.base} and land when the store next opens"
        )


@contextlib.contextmanager
def _stop_signals_return() -> Iterator[None]:
    """Let uvicorn's stop signals end ``serve`` by returning.

    uvicorn handles SIGTERM and SIGINT while it runs (stop accepting, finish requests,
    shut the app down), then raises the signal again under the handler that was there
    before it; with the defaults that would kill the process (SIGTERM) or raise
    KeyboardInterrupt (SIGINT) before the caller closes the store. Handlers that only
    note the signal make that second delivery harmless.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stops = (signal.SIGTERM, signal.SIGINT)
    previous = {sig: signal.signal(sig, lambda _sig, _frame: None) for sig in stops}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
