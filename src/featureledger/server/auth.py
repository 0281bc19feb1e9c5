"""Who is calling: bearer tokens mapped to principals, one function for every path.

``authenticate(scope, tokens)`` is the only place a token is checked; the middleware and
the lean online path both use it. Tokens come from one of two places:

* with an access policy in force, its principals' tokens, stored only as salted hashes
  (``featureledger policy token-hash``). A token is hashed and compared against them once
  per process (on a worker thread, off the event loop), then found by its digest in a dict;
  tokens found unknown are remembered too (a bounded set), so a client repeating a wrong
  token costs a lookup. The map follows the policy: a new version is picked up by the
  background health checks, which read the registry anyway.
* without a policy, ``server.tokens`` in featureledger.yaml (token -> principal, compared
  in constant time), as before. Plain-text tokens and a policy do not mix: with a policy
  in force the server refuses to start while ``server.tokens`` is set; ``featureledger
  policy migrate-tokens`` moves them into the policy file as hashes.

Without any token the server needs no authentication (and binds only a loopback address,
``check_bind``); requests then act as the server's own principal. An authenticated request
acts as its token's principal (``acting_as``): the access policy judges it, and what it
writes (a push's commit) names it. ``principal(scope)`` is who a checked request is from: the routes record writes as done by
it.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import hmac
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from featureledger.governance.tokens import verify_token
from featureledger.registry.actor import acting_as
from featureledger.server.guard import error_body
from featureledger.server.metrics import ServerMetrics

T = TypeVar("T")
_UNKNOWN_KEPT = 10_000  # digests of refused tokens remembered (oldest forgotten first)
_MISS = object()


class TokenMap:
    """Bearer token -> principal (see the module docstring)."""

    def __init__(self, plain: Mapping[str, str]) -> None:
        self._plain = [(k.encode(), v) for k, v in plain.items()]
        self._hashed: list[tuple[str, str]] = []
        self.policy_version: int | None = None
        self._known: dict[bytes, str] = {}
        self._unknown: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        """Whether requests must present a token."""
        return bool(self._plain or self._hashed)

    def use_policy(self, record: Any) -> None:
        """Take the tokens of policy version ``record`` (None: no policy in force)."""
        version = None if record is None else record.version
        if version == self.policy_version:
            return
        hashed = [] if record is None else [
            (h, who) for who, p in record.spec.get("principals", {}).items()
            for h in p.get("tokens", [])]
        with self._lock:
            self._hashed, self.policy_version = hashed, version
            self._known, self._unknown = {}, collections.OrderedDict()

    def lookup(self, token: bytes) -> Any:
        """The principal of ``token`` without hashing it (None: refused), or ``_MISS``
        when it must be verified first (:meth:`verify`)."""
        if self.policy_version is None:
            for plain, who in self._plain:
                if hmac.compare_digest(plain, token):
                    return who
            return None
        digest = hashlib.sha256(token).digest()
        known = self._known.get(digest)
        if known is not None:
            return known
        return None if digest in self._unknown else _MISS

    def verify(self, token: bytes) -> str | None:
        """Check ``token`` against every hashed token (slow by design: call it off the
        event loop), remembering the outcome."""
        hashed = self._hashed
        who = next((w for h, w in hashed if verify_token(token, h)), None)
        digest = hashlib.sha256(token).digest()
        with self._lock:
            if hashed is self._hashed:  # not replaced by a new policy meanwhile
                if who is not None:
                    self._known[digest] = who
                else:
                    self._unknown[digest] = None
                    while len(self._unknown) > _UNKNOWN_KEPT:
                        self._unknown.popitem(last=False)
        return who


def token_map(store: Any) -> TokenMap:
    """The token map of ``store``'s server: ``server.tokens``, or the hashed tokens of the
    access policy in force (a ConfigError when both are given)."""
    from featureledger.errors import ConfigError

    tokens = TokenMap(store.config.server.tokens)
    record = store.access.policy()
    if record is not None and store.config.server.tokens:
        raise ConfigError(
            f"server.tokens holds {len(store.config.server.tokens)} token(s) in plain text, "
            f"but access policy version {record.version} is in force, whose principals carry "
            "their tokens as salted hashes; run 'featureledger policy migrate-tokens' to move "
            "them into policy.yaml as hashes, apply it, and remove server.tokens")
    tokens.use_policy(record)
    return tokens


def _bearer(scope: Any) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            token = token.strip()
            return token if scheme.lower() == b"bearer" and token else None
    return None


async def authenticate(scope: Any, tokens: TokenMap) -> tuple[bool, str | None]:
    """(authenticated, principal): the principal is None when the server takes no tokens
    (requests act as the server's own principal)."""
    if not tokens:
        return True, None
    token = _bearer(scope)
    if token is None:
        return False, None
    who = tokens.lookup(token)
    if who is _MISS:
        who = await run_in_threadpool(tokens.verify, token)
    return who is not None, who


def as_principal(who: str | None, fn: Callable[..., T]) -> Callable[..., T]:
    """``fn`` run as ``who`` (for a worker thread, which does not inherit the context)."""
    if who is None:
        return fn

    @functools.wraps(fn)
    def run(*args: Any) -> T:
        with acting_as(who):
            return fn(*args)

    return run


class AuthMiddleware:
    """Bearer tokens -> principal (``scope["state"]["principal"]``); 401 otherwise."""

    def __init__(self, app: Any, tokens: TokenMap, metrics: ServerMetrics,
                 open_paths: frozenset[str] | set[str] = frozenset()) -> None:
        self.app = app
        self.open_paths = open_paths  # answered without a token (health, the API document)
        self.tokens = tokens
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            if scope["type"] == "http":
                scope.setdefault("state", {})["principal"] = None
            await self.app(scope, receive, send)
            return
        ok, principal = await authenticate(scope, self.tokens)
        if not ok:
            self.metrics.errors.labels("auth", "unauthenticated").inc()
            resp = Response(UNAUTHENTICATED, status_code=401, media_type="application/json",
                            headers={"WWW-Authenticate": "Bearer"})
            await resp(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


UNAUTHENTICATED = error_body(
    "unauthenticated", "missing or unknown bearer token; send 'Authorization: Bearer "
    "<token>' with a token of a principal of the access policy (or, without a policy, one "
    "listed under server.tokens)")


def principal(scope: Any) -> str | None:
    """Who the current request is from, as authentication found it (None when the server
    takes no tokens: the server's own principal): what a write is recorded as done by."""
    who = scope.get("state", {}).get("principal")
    return None if who is None else str(who)


def check_bind(host: str, tokens: Any) -> None:
    """Refuse to listen on a non-loopback address without authentication (``tokens``: a
    TokenMap or the ``server.tokens`` mapping; empty means none)."""
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
            "could read features. Give principals tokens in policy.yaml (featureledger "
            "policy token-hash), or add tokens under server.tokens in featureledger.yaml "
            "(token: principal), or bind 127.0.0.1"
        )
