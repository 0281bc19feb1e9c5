"""Who is calling: bearer tokens mapped to principals, one function for every path.

``principal_of(scope, tokens)`` is the only place a token is checked (constant-time
comparison); the middleware and the lean online path both use it. ``principal(scope)``
is who a request is from once checked: the routes record writes as done by it. ``check_bind`` refuses
to listen beyond loopback without tokens.
"""

from __future__ import annotations

import hmac
from typing import Any

from fastapi.responses import Response

from featureledger.server.guard import error_body
from featureledger.server.metrics import ServerMetrics


class AuthMiddleware:
    """Bearer tokens -> principal (``scope["state"]["principal"]``); 401 otherwise."""

    def __init__(self, app: Any, tokens: dict[str, str], metrics: ServerMetrics,
                 open_paths: frozenset[str] | set[str] = frozenset()) -> None:
        self.app = app
        self.open_paths = open_paths  # answered without a token (health, the API document)
        self.tokens = [(k.encode(), v) for k, v in tokens.items()]
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not self.tokens or scope["path"] in self.open_paths:
            if scope["type"] == "http":
                scope.setdefault("state", {})["principal"] = "anonymous"
            await self.app(scope, receive, send)
            return
        principal = principal_of(scope, self.tokens)
        if principal is None:
            self.metrics.errors.labels("auth", "unauthenticated").inc()
            resp = Response(UNAUTHENTICATED, status_code=401, media_type="application/json",
                            headers={"WWW-Authenticate": "Bearer"})
            await resp(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


UNAUTHENTICATED = error_body(
    "unauthenticated", "missing or unknown bearer token; send 'Authorization: Bearer "
    "<token>' with a token listed under server.tokens")


def principal(scope: Any) -> str:
    """Who the current request is from, as authentication found it (``anonymous`` when the
    server has no tokens): what a write is recorded as done by."""
    return str(scope.get("state", {}).get("principal") or "anonymous")


def principal_of(scope: Any, tokens: list[tuple[bytes, str]]) -> str | None:
    if not tokens:
        return "anonymous"
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            token = token.strip()
            if scheme.lower() == b"bearer" and token:
                for known, who in tokens:
                    if hmac.compare_digest(known, token):
                        return who
            return None
    return None


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
