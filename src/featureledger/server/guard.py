"""What every request passes through first: body limits, the body-read deadline, typed
errors, and a last line against plain-text 500s.

Why each:

* **Size.** A body is refused with 413 from its ``Content-Length`` before a byte of it is
  read, or, sent chunked, as soon as it grows past ``server.max_body_bytes``; and all
  bodies held at once share ``server.body_budget_bytes`` (503 beyond it), so neither one
  large body nor many medium ones can take the server's memory (measured before: four
  100 MB bodies took it from 339 to 767 MB).
* **Time.** The body must arrive within ``server.body_timeout_s`` of the headers; a slow
  or half-sent one is answered 408 and its connection closed (before: 200 half-sent
  bodies were all still open after 20 s).
* **Shape.** Every error is ``{"error": {"code", "message"}}`` with the status of its
  class, messages are cut to a bounded excerpt (a response never echoes a large input
  back), and an exception nothing else answered becomes a JSON 500 here instead of
  uvicorn's plain-text one followed by a closed connection.

413 and 408 close the connection (``Connection: close``): the rest of an unread body would
otherwise be read and thrown away, or the half-sent one waited for.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from featureledger.errors import (
    FeatureLedgerError,
    InvalidJsonError,
    RequestTimeoutError,
    RequestTooLargeError,
    ServerOverloadedError,
    UnsupportedMediaTypeError,
)
from featureledger.server.admission import backend_of_exception, is_outage, retry_after

_log = logging.getLogger("featureledger.server")

MAX_MESSAGE = 2000  # characters of an error message sent back
_BACKEND_LABELS = {"online_store": "the online store", "registry": "the registry",
                   "offline_store": "the offline store"}

ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]


def clip(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` cut to about ``limit`` characters, saying how long it was; the end is kept
    too, since a message ends with what to do.

    >>> clip("abcdefghijklmnopqrstuvwxyz", 10)
    'abcdefg [... 17 of 26 characters cut ...] yz'
    """
    if len(text) <= limit:
        return text
    head, tail = limit * 3 // 4, limit // 5
    return (f"{text[:head]} [... {len(text) - head - tail} of {len(text)} characters cut "
            f"...] {text[len(text) - tail:]}")


def error_body(code: str, message: str) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": clip(message)}})


def describe(exc: BaseException) -> tuple[int, str, str, list[tuple[bytes, bytes]]]:
    """Status, code, message and extra headers of the answer to ``exc``."""
    headers: list[tuple[bytes, bytes]] = []
    if isinstance(exc, FeatureLedgerError):
        status, code, message = exc.http_status, exc.code, str(exc)
    elif is_outage(exc):
        # a driver error nobody translated (a registry query on a lost connection): the
        # backend is unavailable, which is not a bug of the server
        backend = backend_of_exception(exc)
        label = _BACKEND_LABELS.get(backend or "", "a backend")
        status, code = 503, "backend_unavailable"
        message = (f"{label} did not answer: {type(exc).__name__}: {exc}; retry in a "
                   "second, and check the backend if it persists")
    else:
        status, code = 500, "internal_error"
        message = f"the server failed: {type(exc).__name__}: {exc}; see the server log"
    if isinstance(exc, (BodyTooLargeError, RequestTimeoutError)):
        headers.append((b"connection", b"close"))
    if status == 503:
        wait = getattr(exc, "retry_after_s", 1.0)
        headers.append((b"retry-after", str(retry_after(wait)).encode()))
    return status, code, message, headers


async def send_error(send: Any, exc: BaseException) -> int:
    """Answer ``exc`` on a raw ASGI ``send``; returns the status sent."""
    status, code, message, extra = describe(exc)
    body = error_body(code, message)
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    return status


def check_json_content_type(scope: Any) -> None:
    """Refuse a body not declared as JSON, or not declared at all (415), on every route
    that takes one: ``application/json`` or ``application/<anything>+json``."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            if media == b"application/json" or (media.startswith(b"application/")
                                                and media.endswith(b"+json")):
                return
            raise UnsupportedMediaTypeError(
                f"the request body is declared as {clip(media.decode('latin-1'), 100)!r}; "
                "send JSON with 'Content-Type: application/json'")
    raise UnsupportedMediaTypeError(
        "the request has no Content-Type header; send the JSON body with "
        "'Content-Type: application/json'")


class BodyBudget:
    """Bytes of request bodies held at once, across requests (event loop only)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0


class GuardedReceive:
    """``receive`` with the size limit, the body budget and the body-read deadline."""

    __slots__ = ("_budget", "_deadline", "_done", "_held", "_max", "_receive", "_size",
                 "_timeout")

    def __init__(self, receive: Any, *, max_bytes: int, budget: BodyBudget,
                 deadline: float, timeout_s: float) -> None:
        self._receive = receive
        self._max = max_bytes
        self._budget = budget
        self._deadline = deadline
        self._timeout = timeout_s
        self._size = 0
        self._held = 0
        self._done = False

    async def __call__(self) -> Any:
        if self._done:  # the body is in: later calls wait for a disconnect, unbounded
            return await self._receive()
        try:
            async with asyncio.timeout_at(self._deadline):
                message = await self._receive()
        except TimeoutError:
            raise RequestTimeoutError(
                f"the request body did not arrive within {self._timeout:g}s "
                f"(server.body_timeout_s; {self._size} bytes came); send the whole body "
                "at once") from None
        if message["type"] != "http.request":
            self._done = True
            return message
        chunk = message.get("body", b"")
        if chunk:
            n = len(chunk)
            self._size += n
            if self._size > self._max:
                raise too_large(self._max, f"more than {self._max} bytes")
            budget = self._budget
            if budget.used + n > budget.limit:
                raise ServerOverloadedError(
                    f"the server holds {budget.used} bytes of request bodies already "
                    f"(server.body_budget_bytes is {budget.limit}); retry in a second")
            budget.used += n
            self._held += n
        if not message.get("more_body", False):
            self._done = True
        return message

    def release(self) -> None:
        self._budget.used -= self._held
        self._held = 0


class BodyTooLargeError(RequestTooLargeError):
    """A body refused before it was read whole: its connection is closed, since what is
    left of the body would otherwise have to be read (and thrown away) first."""


def too_large(limit: int, got: str) -> RequestTooLargeError:
    return BodyTooLargeError(
        f"the request body is too large: {got}, and this server takes at most {limit} "
        "bytes (server.max_body_bytes); send less per request (split the keys or rows)")


class RequestGuard:
    """Limits and the last-resort error answer around one request (see module docs)."""

    def __init__(self, *, max_body_bytes: int, body_budget_bytes: int,
                 body_timeout_s: float,
                 on_refused: Callable[[str, str, int, str], None]) -> None:
        self.max_body_bytes = max_body_bytes
        self.budget = BodyBudget(body_budget_bytes)
        self.body_timeout_s = body_timeout_s
        self._on_refused = on_refused  # (path, method, status, code): for the metrics

    async def __call__(self, scope: Any, receive: Any, send: Any, app: ASGIApp) -> None:
        declared: int | None = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                break
        refusal: FeatureLedgerError | None = None
        if declared is not None and declared < 0:
            refusal = InvalidJsonError("the Content-Length header is not a number of bytes")
        elif declared is not None and declared > self.max_body_bytes:
            refusal = too_large(self.max_body_bytes, f"{declared} bytes declared")
        if refusal is not None:
            status = await send_error(send, refusal)
            self._on_refused(scope["path"], scope["method"], status, refusal.code)
            return
        loop = asyncio.get_running_loop()
        guarded = GuardedReceive(receive, max_bytes=self.max_body_bytes, budget=self.budget,
                                 deadline=loop.time() + self.body_timeout_s,
                                 timeout_s=self.body_timeout_s)
        started = False

        async def guarded_send(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await app(scope, guarded, guarded_send)
        except Exception as exc:
            if type(exc).__name__ == "ClientDisconnect":
                return  # nobody to answer
            if not isinstance(exc, FeatureLedgerError) and not is_outage(exc):
                # Starlette answers (through the app's handler) and raises again so that
                # servers can log: this is that log; uvicorn would close the connection
                _log.error("request %s %s failed", scope.get("method"), scope.get("path"),
                           exc_info=exc)
            if not started:
                status = await send_error(send, exc)
                self._on_refused(scope["path"], scope["method"], status, describe(exc)[1])
        finally:
            guarded.release()
