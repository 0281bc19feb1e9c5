"""``POST /features/online`` answered inside the HTTP protocol.

Where the time went (``py-spy record`` on ``featureledger serve`` pinned to one core, the
cache on, 32 connections back to back): about 70% of the samples were in uvicorn's
per-request machinery around the route, not in the route: building the scope, a
``RequestResponseCycle`` with its ``asyncio.Event``, a task created and scheduled per
request, the proxy-headers middleware, the request guard's body deadline (an
``asyncio.timeout`` per ``receive``, 5%), and two socket writes per response (status
line and headers, then the body: 19% between them). The read itself was about 8%, the
JSON answer 8%, parsing the body 4%, the metrics 3%.

So for this route the protocol (:func:`fast_protocol`, a subclass of the guarded
httptools protocol) frames the request itself: it takes the body whole (it is small and
declared), runs the app's own handler for the route (``FeatureServerApp._dispatch`` ->
``_OnlinePath``: the same bearer-token check, parsing, online read service, typed errors
and metrics) by stepping its coroutine in place (:func:`run_eagerly`, what Python 3.12's
eager tasks do), and writes the answer in one piece. A request answered without waiting
(a cache hit, any refusal) never becomes a task; one that must wait (a store read on the
worker pool, with its admission control, deadline and breakers) continues in a task
from where it stopped. Measured side by side on one core with the cache on: 108-111 µs
of server CPU per request through uvicorn's cycle, 73-75 µs on this route.

The protocol takes a request only when it is plain: ``POST /features/online`` exactly, a
``Content-Length`` within the inline limit and the body budget, no chunked body, no
``Expect: 100-continue``, and no earlier request on the connection still being
answered. The route authenticates as always; a request whose token the token map cannot
resolve at once (one seen for the first time, verified against the policy's hashes on a
thread) runs in a task from its start, and every request runs in a context of its own
(who it acts as is a context variable), as under a task. Anything else goes the usual
way through uvicorn and the request guard, which answers the limits (413, 408, 400, 503)
as before. What the guard does for a request the protocol takes, the protocol does: the
body must arrive within ``server.body_timeout_s`` (408, connection closed), its bytes
count against ``server.body_budget_bytes`` until the answer, and an exception nothing
answered becomes the guard's JSON 500. The tests send every exchange to a server with
this route and one without and compare the answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Coroutine
from typing import Any

from featureledger.errors import RequestTimeoutError
from featureledger.server.guard import describe, error_body

_log = logging.getLogger("featureledger.server")

MAX_INLINE_BODY = 1 << 20  # larger bodies go through the guard's streaming reader


class _Signal:
    """Stands in for the ``asyncio.Event`` uvicorn sets on a cycle (nobody waits here)."""

    __slots__ = ()

    def set(self) -> None:
        pass


_SIGNAL = _Signal()


class FastCycle:
    """One request taken by the fast route: what uvicorn's protocol reads of a cycle
    (``response_complete``, ``disconnected``, ``keep_alive``, ``message_event``), so that
    a request pipelined behind it waits its turn, and the body and its deadline."""

    __slots__ = ("body", "disconnected", "held", "keep_alive", "message_event",
                 "response_complete", "timer")

    def __init__(self, keep_alive: bool, held: int) -> None:
        self.keep_alive = keep_alive
        self.held = held  # bytes reserved in the body budget until the body is parsed
        self.body: list[bytes] | None = []  # None once the request is dispatched
        self.response_complete = False
        self.disconnected = False
        self.message_event = _SIGNAL
        self.timer: Any = None


class _Exchange:
    """An in-memory ``receive``/``send`` pair: the whole body in, the answer collected."""

    __slots__ = ("body", "headers", "payload", "status")

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.payload: list[bytes] = []

    async def receive(self) -> dict[str, Any]:
        body = self.body
        if body is None:  # asked again after the whole body: nothing more will come
            return {"type": "http.disconnect"}
        self.body = None  # type: ignore[assignment]
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = list(message.get("headers", ()))
        else:
            self.payload.append(message.get("body", b""))


def run_eagerly(coro: Coroutine[Any, Any, Any]) -> tuple[bool, Any]:
    """Step ``coro`` until it first waits: ``(True, None)`` when it finished (its
    exception, if any, is raised), else ``(False, what it waits on)``; what
    ``asyncio.eager_task_factory`` does on Python 3.12."""
    try:
        waiting = coro.send(None)
    except StopIteration:
        return True, None
    return False, waiting


async def finish(coro: Coroutine[Any, Any, Any], waiting: Any,
                 started: bool = True) -> None:
    """Drive ``coro`` on from where :func:`run_eagerly` left it, as its task would (from
    its start when not ``started``).

    A coroutine suspended on an asyncio future reads the future's outcome itself when it
    is resumed, so each step waits for the future (its error is the coroutine's to see)
    and then resumes the coroutine.
    """
    if not started:
        await coro
        return
    while True:
        if waiting is None:  # a bare yield (``asyncio.sleep(0)``): one turn of the loop
            await asyncio.sleep(0)
        else:
            # what a task does with a future its coroutine yields: take it as awaited
            waiting._asyncio_future_blocking = False
            with contextlib.suppress(BaseException):  # the coroutine reads the outcome
                await waiting
        try:
            waiting = coro.send(None)
        except StopIteration:
            return


class FastRoute:
    """What the protocol needs of the app for ``POST /features/online``."""

    def __init__(self, app: Any) -> None:
        online = app.online_path
        guard = app.guard
        self.dispatch = app._dispatch  # the app past its guard: routing, then the route
        self.refused = guard._on_refused  # (path, method, status, code): the metrics
        self.path = online.PATH.encode()
        self.tokens = online.tokens  # a TokenMap
        self.budget = guard.budget
        self.max_body = min(guard.max_body_bytes, MAX_INLINE_BODY)
        self.body_timeout_s = guard.body_timeout_s

    def eager(self, scope: Any) -> bool:
        """Whether the route can be stepped in place: no token, or one the token map
        resolves at once (a token seen for the first time is verified on a thread,
        which needs a task)."""
        tokens = self.tokens
        if not tokens:
            return True
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                token = token.strip()
                if scheme.lower() != b"bearer" or not token:
                    return True  # refused at once
                found = tokens.lookup(token)
                return found is None or isinstance(found, str)
        return True

    def admits(self, headers: list[tuple[bytes, bytes]]) -> int | None:
        """The declared body length when the request is plain enough, else None."""
        length: int | None = None
        for name, value in headers:
            if name == b"content-length":
                if length is not None or not value.isdigit():
                    return None
                length = int(value)
            elif name == b"transfer-encoding" or name == b"expect":
                return None
        if length is None or length > self.max_body:
            return None
        budget = self.budget
        if budget.used + length > budget.limit:
            return None
        return length


def fast_protocol(base: type[Any], route: FastRoute) -> type[Any]:
    """``base`` (uvicorn's httptools protocol, guarded) answering ``route`` itself."""
    from uvicorn.protocols.http.httptools_impl import STATUS_LINE

    path = route.path
    dispatch = route.dispatch

    class FastRouteProtocol(base):  # type: ignore[misc, valid-type]
        _fl_refused: bool
        cycle: Any

        def on_headers_complete(self) -> None:
            if self._fl_refused:
                return
            prev = self.cycle
            parser = self.parser
            if (self.url != path or (prev is not None and not prev.response_complete)
                    or parser.get_method() != b"POST" or parser.should_upgrade()
                    or self.limit_concurrency is not None):
                super().on_headers_complete()
                return
            scope = self.scope
            length = route.admits(scope["headers"])
            if length is None:
                super().on_headers_complete()
                return
            self._fl_in_head = False
            self._fl_disarm()
            http_version = parser.get_http_version()
            scope["method"] = "POST"
            if http_version != "1.1":
                scope["http_version"] = http_version
            scope["path"] = self.root_path + path.decode()
            scope["raw_path"] = self.root_path.encode() + path
            scope["query_string"] = b""
            route.budget.used += length
            self.cycle = FastCycle(http_version != "1.0" and parser.should_keep_alive(),
                                   length)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            cycle = self.cycle
            if (cycle.__class__ is FastCycle and cycle.held and cycle.timer is None
                    and not cycle.response_complete):
                # the body is still on its way: it has body_timeout_s to arrive
                cycle.timer = self.loop.call_later(route.body_timeout_s, self._fr_late,
                                                   cycle)

        def on_body(self, body: bytes) -> None:
            cycle = self.cycle
            if cycle.__class__ is FastCycle:
                if cycle.body is not None and not cycle.response_complete:
                    cycle.body.append(body)
                return
            super().on_body(body)

        def on_message_complete(self) -> None:
            cycle = self.cycle
            if cycle.__class__ is not FastCycle:
                super().on_message_complete()
                return
            if cycle.response_complete:
                return
            if cycle.timer is not None:
                cycle.timer.cancel()
                cycle.timer = None
            body = b"".join(cycle.body)  # type: ignore[arg-type]
            cycle.body = None  # taken: the budget is released when the answer is
            ex = _Exchange(body)
            coro = dispatch(self.scope, ex.receive, ex.send)
            # the request's own context, as a task would have (the route may set context
            # variables, e.g. who it acts as); the task that continues it runs in it too
            ctx = contextvars.copy_context()
            started = route.eager(self.scope)
            if started:
                try:
                    done, waiting = ctx.run(run_eagerly, coro)
                except Exception as exc:
                    self._fr_release(cycle)
                    self._fr_failed(cycle, ex, exc)
                    return
                if done:  # answered without waiting: from the cache, or refused
                    self._fr_release(cycle)
                    self._fr_respond(cycle, ex)
                    return
            else:  # the token must be checked on a thread first: a task from the start
                done, waiting = False, None
            task = self.loop.create_task(
                self._fr_finish(cycle, ex, coro, waiting, started), context=ctx)
            task.add_done_callback(self.tasks.discard)
            self.tasks.add(task)

        async def _fr_finish(self, cycle: FastCycle, ex: _Exchange, coro: Any,
                             waiting: Any, started: bool) -> None:
            try:
                await finish(coro, waiting, started)
            except Exception as exc:
                self._fr_failed(cycle, ex, exc)
                return
            finally:
                self._fr_release(cycle)
            self._fr_respond(cycle, ex)

        def _fr_release(self, cycle: FastCycle) -> None:
            route.budget.used -= cycle.held
            cycle.held = 0

        def _fr_failed(self, cycle: FastCycle, ex: _Exchange, exc: BaseException) -> None:
            """What the request guard does with an exception nothing answered."""
            _log.error("request POST %s failed", path.decode(), exc_info=exc)
            if ex.status:  # the answer had started: the connection cannot be trusted
                self.transport.close()
                return
            self._fr_error(cycle, ex, exc)

        def _fr_error(self, cycle: FastCycle, ex: _Exchange, exc: BaseException) -> None:
            """Answer ``exc`` as the request guard answers what it refuses."""
            status, code, message, extra = describe(exc)
            ex.status = status
            ex.payload = [error_body(code, message)]
            ex.headers = [(b"content-type", b"application/json"),
                          (b"content-length", str(len(ex.payload[0])).encode()), *extra]
            self._fr_respond(cycle, ex)
            route.refused(self.scope["path"], "POST", status, code)

        def _fr_late(self, cycle: FastCycle) -> None:
            """The body did not arrive in time: 408, and the connection is closed."""
            cycle.timer = None
            if cycle.response_complete or self.cycle is not cycle:
                return
            self._fl_refused = True  # what is left of the body is not parsed
            self._fr_release(cycle)
            received = sum(map(len, cycle.body or ()))
            cycle.body = None
            exc = RequestTimeoutError(
                f"the request body did not arrive within {route.body_timeout_s:g}s "
                f"(server.body_timeout_s; {received} bytes came); send "
                "the whole body at once")
            self._fr_error(cycle, _Exchange(b""), exc)

        def _fr_respond(self, cycle: FastCycle, ex: _Exchange) -> None:
            """Write the answer in one piece, then what uvicorn does after a response."""
            cycle.response_complete = True
            if cycle.disconnected:
                return
            if not ex.status:  # the handler returned without answering: a bug
                self._fr_failed(cycle, ex, RuntimeError(
                    "the online features handler returned without answering"))
                return
            body = b"".join(ex.payload)
            content = [STATUS_LINE[ex.status]]
            keep_alive = cycle.keep_alive
            closing = False
            sized = False
            for name, value in (*self.server_state.default_headers, *ex.headers):
                if name == b"connection" and b"close" in value.lower():
                    keep_alive = False
                    closing = True
                elif name == b"content-length":
                    sized = True
                content += (name, b": ", value, b"\r\n")
            if not keep_alive and not closing:
                content.append(b"connection: close\r\n")
            if not sized:
                content += (b"content-length: ", str(len(body)).encode(), b"\r\n")
            content += (b"\r\n", body)
            self.transport.write(b"".join(content))
            if not keep_alive:
                self.transport.close()
            self.on_response_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            cycle = self.cycle
            if cycle.__class__ is FastCycle and not cycle.response_complete:
                if cycle.timer is not None:
                    cycle.timer.cancel()
                    cycle.timer = None
                if cycle.body is not None:  # still collecting: nobody to answer
                    self._fr_release(cycle)
            super().connection_lost(exc)

        def shutdown(self) -> None:
            cycle = self.cycle
            if cycle.__class__ is FastCycle and not cycle.response_complete:
                cycle.keep_alive = False  # answer, then close
                return
            super().shutdown()

    return FastRouteProtocol
