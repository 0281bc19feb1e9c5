"""The HTTP feature server (FastAPI): online features, push, catalog reads, health, metrics.

Responses are JSON rendered by orjson. The online-features endpoint is answered ahead of
the framework's middleware and router (``_OnlinePath``): it reads its body with orjson
and checks it by hand (its schema is still published in the OpenAPI document), so the hot
path builds no pydantic objects per request; under :func:`serve` the HTTP protocol frames
a plain request to it itself (:mod:`.fastpath`). A request whose keys are all in the
in-process cache is answered from memory on the event loop, and so is a small read of an
online store that answers without waiting (SQLite's point reads, :mod:`.inline`, while it
stays fast and its breaker closed); every other store call, and anything that touches the
registry, runs on a bounded worker pool (:mod:`.admission`).

What protects the server and its clients (:mod:`.guard`, :mod:`.admission`,
:mod:`.health`; limits under ``server:`` in featureledger.yaml):

* bodies are limited in size and in the time they may take to arrive (413, 408), and so
  are request lines and headers (431, 408; :mod:`.protocol`); entity rows per request
  and rows per push are limited (413);
* a full worker queue sheds at once (503 + Retry-After); a backend that keeps failing has
  its circuit breaker opened, and requests that need it fail at once (503 naming it)
  until a probe or a trial request finds it answering;
* **the bound**: a read (online features, catalog) is answered within
  ``server.request_timeout_s`` (default 1 s) of its body arriving, whatever the backends
  do; no request waits longer than that for a worker; a push, once running, is not cut
  short (its outcome would be unknown to the client) and takes at most the backends' own
  timeouts;
* ``/health``, ``/health/live`` and ``/health/ready`` answer from health checks run in the
  background, so they take well under a millisecond even while a backend hangs;
* every error is JSON ``{"error": {"code", "message"}}`` with the status of its
  featureledger error class (400 bad JSON, 404 unknown names, 408, 413, 415, 422 bad
  input, 503 a backend down or overload; 500 only for a bug), with messages cut to a
  bounded excerpt.

Shutdown drains: on SIGTERM or SIGINT ``serve`` stops accepting connections, lets the
requests in flight finish (up to ``DRAIN_TIMEOUT_S``), lands every buffered push offline
(the app's lifespan shutdown, so any ASGI server that runs the app does the same) and
returns, so ``featureledger serve`` closes the store and exits 0. A push answered before
the signal is durable in the push log either way; draining makes it a commit too.

Authentication: with tokens (the hashed tokens of the access policy's principals, or
without a policy ``server.tokens``), every endpoint but the health endpoints and the
OpenAPI document needs ``Authorization: Bearer <token>``, and the request acts as the
token's principal (:mod:`.auth`); the access policy then decides what it may read or push
(403 ``permission_denied`` otherwise, audited). Without tokens the server only binds a
loopback address (``serve`` refuses anything else).
``/docs`` and ``/openapi.json`` need a token too, unless ``server.public_docs``; the docs
page's static files are served locally.

Every route that takes a body takes JSON only, declared as such (415 otherwise, also
without a ``Content-Type``). Float NaN and infinity, which JSON cannot hold, are the text
``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` both ways. ``serve`` binds its socket before
anything is announced or served: a port in use is a ``StateError``.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Literal

import orjson
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from featureledger.errors import FeatureLedgerError
from featureledger.online.response import OnlineResponse
from featureledger.registry.actor import acting_as
from featureledger.server import docs, schemas
from featureledger.server.admission import backend_of_exception
from featureledger.server.auth import (
    UNAUTHENTICATED,
    AuthMiddleware,
    TokenMap,
    as_principal,
    authenticate,
    check_bind,
    principal,
    token_map,
)
from featureledger.server.guard import (
    RequestGuard,
    check_json_content_type,
    describe,
    error_body,
)
from featureledger.server.metrics import MetricsMiddleware, ServerMetrics
from featureledger.server.payloads import parse_online
from featureledger.server.serving import Serving

_log = logging.getLogger("featureledger.server")
DRAIN_TIMEOUT_S = 30.0  # in-flight requests get this long after a stop signal
_HEALTH_PATHS = frozenset({"/health", "/health/live", "/health/ready"})
_DOC_PATHS = frozenset({"/openapi.json", "/docs"})
_HTTP_CODES = {400: "invalid_json", 404: "not_found", 405: "method_not_allowed"}
_KINDS = {"entities": "entity", "views": "feature_view", "feature-sets": "feature_set"}


class OrjsonResponse(JSONResponse):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY
                            | orjson.OPT_NON_STR_KEYS)


def _error_response(exc: BaseException) -> Response:
    status, code, message, extra = describe(exc)
    return Response(error_body(code, message), status_code=status,
                    media_type="application/json",
                    headers={k.decode(): v.decode() for k, v in extra})


def _record(rec: Any) -> dict[str, Any]:
    return {"kind": rec.kind, "name": rec.name, "version": rec.version, "status": rec.status,
            "definition_hash": rec.definition_hash, "created_at": rec.created_at,
            "created_by": rec.created_by, "stale": rec.stale,
            "definition": rec.definition.to_dict()}


async def _read_body(receive: Any) -> bytes | None:
    """The whole request body (through the guard's limits), or None if the client left."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


class _OnlinePath:
    """``POST /features/online`` without the framework's per-request machinery.

    The feature server answers this route before Starlette's middleware stack and router
    (FastAPI still declares it, so it is in the OpenAPI document, and the router's handler
    has the same behaviour), with the same bearer-token check, limits, error shape and
    metrics as every other route. The body is parsed on the event loop (microseconds of
    CPU for a usual request, no I/O). With the cache on, ``get_online_features_nowait``
    answers a request whose keys are all cached without leaving the loop: it is only dict
    lookups, and it declines (returns None) whenever a store or the registry would be
    touched, so it never blocks, and it keeps answering from memory while the online
    store is down. A small read of a store that offers a reader for the loop (SQLite) is
    answered there too, under the conditions of :mod:`.inline`: a point read takes less
    time than the hand-off to a thread. Everything else runs on the read pool: store
    reads release the GIL while they wait on SQLite or Redis, so a few threads overlap
    them, and more threads would only contend for the GIL.
    """

    PATH = "/features/online"

    def __init__(self, serving: Serving, tokens: TokenMap,
                 metrics: ServerMetrics) -> None:
        self.serving = serving
        self.online = serving.online
        self.max_rows = serving.config.max_entity_rows
        self.tokens = tokens
        self.metrics = metrics
        self.inline = serving.inline
        self._latency = metrics.latency.labels(self.PATH, "POST")
        self._counts: dict[int, Any] = {}

    def read(self, data: dict[str, Any]) -> bytes:
        """The full read (may block on a store): run on the read pool."""
        resp = self.online.get_online_features(
            data.get("features"), data["entities"], feature_set=data.get("feature_set"),
            deployment=data.get("deployment"),
            full_feature_names=data.get("full_feature_names", False),
            fill_defaults=data.get("fill_defaults", False))
        return orjson.dumps(resp.to_json_dict(), option=orjson.OPT_SERIALIZE_NUMPY)

    async def answer(self, scope: Any, body: bytes) -> bytes:
        """The response body for a request body (raises the errors to answer)."""
        check_json_content_type(scope)
        data = parse_online(body, self.max_rows)
        who = scope.get("state", {}).get("principal")
        # a read through a deployment is counted in its usage: never answered on the loop
        resp = None if data.get("deployment") is not None else self._on_loop(data, who)
        if resp is not None:
            return orjson.dumps(resp.to_json_dict(), option=orjson.OPT_SERIALIZE_NUMPY)
        serving = self.serving
        result: bytes = await serving.reads.run(as_principal(who, self.read), data,
                                                needs=(serving.online_store,),
                                                deadline=serving.deadline())
        return result

    def _on_loop(self, data: dict[str, Any], who: str | None) -> OnlineResponse | None:
        """The answer from the cache, or read on the loop (:mod:`.inline`), or None."""
        inline, reader = self.inline, None
        if inline is not None:
            reader = inline.reader(data["entities"])
            if reader is None:
                inline = None  # not read on the loop: nothing to time
        if inline is not None:
            waits, t0 = inline.waits(), time.perf_counter()
        with acting_as(who):  # only given to an admitted principal
            try:
                resp = self.online.get_online_features_nowait(
                    data.get("features"), data["entities"],
                    feature_set=data.get("feature_set"),
                    full_feature_names=data.get("full_feature_names", False),
                    fill_defaults=data.get("fill_defaults", False), reader=reader)
            except Exception as exc:
                if inline is None or backend_of_exception(exc) is None:
                    raise  # the request's own error, the same on the pool
                # the store failed on the loop: the pool reads it again, and its error
                # (and the breaker's count of it) is the normal read's
                inline.pause()
                return None
            if inline is not None and resp is not None:
                inline.took(time.perf_counter() - t0, waits)
            return resp

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        t0 = time.perf_counter()
        headers = [(b"content-type", b"application/json")]
        scope.setdefault("state", {})
        ok, who = await authenticate(scope, self.tokens)
        status = 200
        if not ok:
            self.metrics.errors.labels("auth", "unauthenticated").inc()
            status, payload = 401, UNAUTHENTICATED
            headers.append((b"www-authenticate", b"Bearer"))
        else:
            scope["state"]["principal"] = who
            try:
                body = await _read_body(receive)
                if body is None:
                    return  # the client left: nobody to answer
                payload = await self.answer(scope, body)
            except Exception as exc:
                status, code, message, extra = describe(exc)
                if status == 500:  # a bug: answered in the documented shape, and logged
                    _log.error("online features request failed", exc_info=exc)
                self.metrics.errors.labels(self.PATH, code).inc()
                payload = error_body(code, message)
                headers.extend(extra)
        headers.append((b"content-length", str(len(payload)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        counter = self._counts.get(status)
        if counter is None:
            counter = self._counts[status] = self.metrics.requests.labels(
                self.PATH, "POST", str(status))
        counter.inc()
        self._latency.observe(time.perf_counter() - t0)


class FeatureServerApp(FastAPI):
    """The FastAPI app, behind the request guard, with ``POST /features/online`` answered
    ahead of its middleware."""

    online_path: _OnlinePath | None = None
    guard: RequestGuard | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        guard = self.guard
        if guard is None or scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        await guard(scope, receive, send, self._dispatch)

    async def _dispatch(self, scope: Any, receive: Any, send: Any) -> None:
        fast = self.online_path
        if fast is not None and scope["path"] == fast.PATH and scope["method"] == "POST":
            await fast(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(store: Any, *, title: str = "featureledger feature server") -> FastAPI:
    """The ASGI app serving ``store`` (a FeatureStore)."""
    import sqlalchemy as sa

    from featureledger import __version__

    online = store.online
    tokens = token_map(store)
    metrics = ServerMetrics(lambda: online.cache.stats() if online.cache is not None else None)
    serving = Serving(store)
    metrics.watch(serving)
    access = store.access

    def follow_policy(_generation: int) -> None:
        try:
            tokens.use_policy(access.policy())
        except Exception:  # the old tokens stay in use; the next probe tries again
            _log.exception("the access policy could not be read; its tokens are not updated")

    serving.on_generation = follow_policy
    metrics.watch_governance(lambda: store.governance_report().gauges())
    metrics.watch_alerts(store.alerting.open_counts)

    def refused(path: str, method: str, status: int, code: str) -> None:
        # answered by the guard before any route: counted under the fast path's own
        # route, or "unmatched" (a label per path would be one per view name)
        route = path if path == _OnlinePath.PATH else "unmatched"
        metrics.errors.labels(route, code).inc()
        metrics.requests.labels(route, method, str(status)).inc()

    cfg = store.config.server
    serving.guard = RequestGuard(max_body_bytes=cfg.max_body_bytes,
                                 body_budget_bytes=cfg.body_budget_bytes,
                                 body_timeout_s=cfg.body_timeout_s, on_refused=refused)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await serving.started()
        yield
        # the server has stopped taking requests and the ones in flight are done: land
        # what is buffered now, so a stopped server leaves commits, not only log segments
        try:
            await run_in_threadpool(online.flush)
        except Exception:  # the rows stay in the push log and land at the next start
            _log.exception("buffered pushes could not land at shutdown; they stay in the "
                           "push log and land when the store next opens")
        serving.close()

    app = FeatureServerApp(
        title=title, version=__version__, default_response_class=OrjsonResponse,
        description="Online feature vectors with per-value status, version and commit; "
        "catalog, model and deployment reads; health and Prometheus metrics.",
        lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.store = store
    app.state.metrics = metrics
    app.state.serving = serving
    app.state.tokens = tokens
    app.guard = serving.guard
    fast = app.online_path = _OnlinePath(serving, tokens, metrics)

    # middleware added last runs first: metrics -> auth -> FastAPI
    open_paths = _HEALTH_PATHS | docs.ASSET_PATHS
    if store.config.server.public_docs:
        open_paths |= _DOC_PATHS
    app.add_middleware(AuthMiddleware, tokens=tokens, metrics=metrics, open_paths=open_paths)
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    def count_error(request: Request, exc: BaseException) -> Response:
        route = getattr(request.scope.get("route"), "path", "unmatched")
        metrics.errors.labels(route, describe(exc)[1]).inc()
        return _error_response(exc)

    @app.exception_handler(FeatureLedgerError)
    async def _fl_error(request: Request, exc: FeatureLedgerError) -> Response:
        return count_error(request, exc)

    async def _outage(request: Request, exc: Exception) -> Response:
        # a driver error nobody translated: 503 naming the backend (see guard.describe)
        return count_error(request, exc)

    for outage in (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError,
                   ConnectionError, TimeoutError):
        app.add_exception_handler(outage, _outage)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> Response:
        # answered here as JSON; Starlette raises it again afterwards so that it is
        # logged, and the request guard logs it without closing the connection
        return count_error(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                             for e in exc.errors())
        return Response(error_body("invalid_request", f"the request is not valid: {problems}"),
                        status_code=422, media_type="application/json")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        path = request.url.path
        message = str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"there is no {path} on this server; the API is listed at /docs"
        elif exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow", "")
            message = f"{request.method} is not allowed on {path}; use {allowed}"
        return Response(error_body(code, message), status_code=exc.status_code,
                        media_type="application/json", headers=exc.headers)

    online_schema = schemas.OnlineFeaturesRequest.model_json_schema()
    push_schema = schemas.PushRequest.model_json_schema()

    @app.post("/features/online", response_model=None, tags=["online"],
              summary="Feature vectors with per-value status, version and commit",
              responses={200: {"model": schemas.OnlineFeaturesResponse}, **schemas.ERRORS},
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": online_schema}}}})
    async def online_features(request: Request) -> Response:
        # answered by _OnlinePath before routing; kept for the OpenAPI document and as
        # the same behaviour for any caller that reaches the router directly
        body = await fast.answer(request.scope, await request.body())
        return Response(body, media_type="application/json")

    @app.post("/push/{view}", response_model=schemas.PushResponse, tags=["online"],
              summary="Write rows online now, durable before the answer; they land "
              "offline as a commit (at once with flush)",
              responses=schemas.ERRORS,
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": push_schema}}}})
    async def push(view: str, request: Request) -> Any:
        check_json_content_type(request.scope)
        body = await request.body()
        commit_id = await serving.writes.run(
            as_principal(request.scope["state"].get("principal"), serving.push), view, body,
            principal(request.scope),
            needs=(serving.online_store, serving.registry),
            deadline=serving.deadline(), cut_short=False)
        return OrjsonResponse({"commit_id": commit_id})

    async def registry_read(fn: Any, *args: Any) -> Any:
        return await serving.writes.run(fn, *args, needs=(serving.registry,),
                                        deadline=serving.deadline())

    @app.get("/catalog/{kind}", response_model=list[schemas.Definition], tags=["catalog"],
             summary="Latest version of every definition of a kind",
             responses=schemas.NO_BODY_ERRORS)
    async def catalog(kind: Literal["entities", "views", "feature-sets"]) -> Any:
        recs = await registry_read(store.list, _KINDS[kind])
        return OrjsonResponse([_record(r) for r in recs])

    @app.get("/catalog/{kind}/{name}", response_model=schemas.Definition, tags=["catalog"],
             summary="One definition (latest version unless 'version' is given)",
             responses=schemas.NO_BODY_ERRORS)
    async def definition(kind: Literal["entities", "views", "feature-sets"], name: str,
                         version: int | None = Query(
                             default=None, ge=1, le=2**31 - 1,
                             description="A version number; the latest when omitted.")
                         ) -> Any:
        rec = await registry_read(store.registry.definitions.get, _KINDS[kind], name,
                                  version)
        return OrjsonResponse(_record(rec))

    @app.get("/catalog/{kind}/{name}/versions", response_model=list[schemas.Definition],
             tags=["catalog"], summary="Every version of a definition",
             responses=schemas.NO_BODY_ERRORS)
    async def versions(kind: Literal["entities", "views", "feature-sets"], name: str) -> Any:
        recs = await registry_read(store.versions, name, _KINDS[kind])
        return OrjsonResponse([_record(r) for r in recs])

    @app.get("/models", response_model=list[schemas.ModelVersionDoc], tags=["models"],
             summary="Model versions, oldest first (of one model with 'name')",
             responses=schemas.NO_BODY_ERRORS)
    async def models(name: str | None = Query(default=None, max_length=500,
                                              description="A model name.")) -> Any:
        recs = await registry_read(store.list_models, name)
        return OrjsonResponse([m.to_dict() for m in recs])

    @app.get("/models/{model}", response_model=schemas.ModelVersionDoc, tags=["models"],
             summary="One model version: 'mdl_...', 'NAME@N' or 'NAME' (the latest)",
             responses=schemas.NO_BODY_ERRORS)
    async def model(model: str) -> Any:
        rec = await registry_read(store.get_model, model)
        return OrjsonResponse(rec.to_dict())

    @app.get("/deployments", response_model=list[schemas.DeploymentDoc], tags=["models"],
             summary="Deployments, newest first", responses=schemas.NO_BODY_ERRORS)
    async def deployments(environment: str | None = Query(default=None, max_length=500),
                          model: str | None = Query(default=None, max_length=500),
                          active_only: bool = False) -> Any:
        recs = await registry_read(functools.partial(
            store.deployments, environment=environment, model=model,
            active_only=active_only))
        return OrjsonResponse([d.to_dict() for d in recs])

    @app.get("/deployments/{deployment_id}", response_model=schemas.DeploymentDoc,
             tags=["models"], summary="One deployment ('dep_...')",
             responses=schemas.NO_BODY_ERRORS)
    async def deployment(deployment_id: str) -> Any:
        rec = await registry_read(store.get_deployment, deployment_id)
        return OrjsonResponse(rec.to_dict())

    docs.add_routes(app, title=app.title)

    async def monitored() -> None:
        if not serving.monitor.started:  # an app run without its lifespan
            await serving.started()

    @app.get("/health", response_model=schemas.Health, tags=["ops"],
             summary="Registry, offline and online store reachability, breakers, cache "
             "statistics (from background checks)",
             responses={503: {"model": schemas.Health, "description": "A check failed."}})
    async def health() -> Any:
        await monitored()
        ok, checks = serving.health()
        return OrjsonResponse({"status": "ok" if ok else "degraded", "checks": checks},
                              status_code=200 if ok else 503)

    @app.get("/health/live", response_model=schemas.Liveness, tags=["ops"],
             summary="The process answers (no backend is asked)")
    async def live() -> Any:
        return OrjsonResponse({"status": "alive"})

    @app.get("/health/ready", response_model=schemas.Readiness, tags=["ops"],
             summary="Every backend answered its last background check and no breaker is "
             "open", responses={503: {"model": schemas.Readiness,
                                      "description": "A backend is not available."}})
    async def ready() -> Any:
        await monitored()
        ok, checks = serving.health()
        backends = {name: {k: v for k, v in checks[name].items() if k != "ms"}
                    for name in ("registry", "online_store", "offline_store")}
        return OrjsonResponse({"status": "ready" if ok else "not_ready",
                               "backends": backends}, status_code=200 if ok else 503)

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics",
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
                        401: schemas.ERRORS[401]})
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
                    if path not in open_paths:
                        for op in ops.values():
                            op["security"] = [{"bearer": []}]
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def uvicorn_config(app: Any, cfg: Any, *, host: str, port: int, loop: str = "auto",
                   log_level: str = "warning", fast_route: bool = True) -> Any:
    """uvicorn's settings for ``app`` under ``cfg`` (``server:``): the httptools protocol
    with limits on request heads when httptools is installed (:mod:`.protocol`), answering
    ``POST /features/online`` itself unless ``fast_route`` is False (:mod:`.fastpath`)."""
    import importlib.util

    import uvicorn

    from featureledger.server.fastpath import FastRoute, fast_protocol
    from featureledger.server.protocol import guarded_protocol

    http: Any = "h11"
    if importlib.util.find_spec("httptools"):
        http = guarded_protocol(timeout_s=cfg.body_timeout_s,
                                max_bytes=cfg.max_header_bytes) or "httptools"
        if fast_route and not isinstance(http, str) and getattr(app, "online_path", None):
            http = fast_protocol(http, FastRoute(app))
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                          loop=loop, http=http,
                          timeout_graceful_shutdown=int(DRAIN_TIMEOUT_S))


def bind_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (port 0: a free one), or ``StateError`` saying why
    not (the port is taken, the address is not this machine's, permission)."""
    from featureledger.errors import StateError

    try:
        family, kind, proto, _, addr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise StateError(f"cannot listen on {host}:{port}: {exc}; check --host or "
                         "server.host") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        why = exc.strerror or str(exc)
        hint = ("another process is listening there; stop it or choose another port with "
                "--port or server.port") if exc.errno == errno.EADDRINUSE else \
            "check --host and --port (server.host, server.port)"
        raise StateError(f"cannot listen on {host}:{port}: {why}; {hint}") from None
    sock.set_inheritable(True)
    return sock


def serve(store: Any, host: str | None = None, port: int | None = None, *,
          log_level: str = "warning",
          on_ready: Callable[[str, int], None] | None = None) -> None:
    """Run the server with uvicorn until SIGTERM or SIGINT, then drain and return.

    The address is bound first: ``StateError`` if it cannot be (before anything is
    served or announced); then ``on_ready(host, port)`` (the port actually bound) is
    called and requests are taken. Raises ``StorageError`` if buffered pushes could not
    land while draining (they stay in the push log and land when the store next opens),
    ``StateError`` if the server could not start.
    """
    import gc
    import importlib.util

    import uvicorn

    from featureledger.errors import StateError, StorageError

    cfg = store.config.server
    host = host or cfg.host
    port = port if port is not None else cfg.port
    check_bind(host, token_map(store))
    sock = bind_socket(host, port)
    try:
        # uvloop and httptools (the server extra) when installed: a faster event loop and
        # HTTP parser; uvicorn's pure-Python fallbacks otherwise. No access log: a line
        # per request costs more than the read it logs (the metrics count every request).
        loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
        app = create_app(store)
        # Everything alive now (modules, the app, definitions, drivers: about 100k
        # objects) lives as long as the server; moved out of the collector's reach, a
        # full collection no longer walks it, which takes tens of milliseconds off the
        # worst requests.
        gc.collect()
        gc.freeze()
        server = uvicorn.Server(uvicorn_config(app, cfg, host=host, port=port, loop=loop,
                                               log_level=log_level))
        if on_ready is not None:
            on_ready(host, int(sock.getsockname()[1]))
        with _stop_signals_return():
            server.run(sockets=[sock])
    finally:
        sock.close()
    if not server.started:
        raise StateError(f"the feature server could not start on {host}:{port} (see the "
                         "log above)")
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
