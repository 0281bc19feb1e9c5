"""uvicorn's httptools protocol with a deadline and a size limit on request heads.

Why: uvicorn bounds neither the time a client may take to send a request line and its
headers, nor their size, and the app only sees a request once its headers are complete, so
the request guard cannot help there. A client that connects and sends nothing, sends its
headers a byte at a time, or sends headers without end, kept a connection (and, for the
last, memory: 16 MB of headers were held in a test) for as long as it liked. Here a
request head must be complete within ``timeout_s`` of the connection opening or of the
request's first byte (408), and at most ``max_bytes`` long (431); either way the
connection is closed. Keep-alive idling between requests is uvicorn's own timeout.

Only the httptools protocol is extended (the parser callbacks below are its interface to
uvicorn); without httptools the server runs on uvicorn's h11 protocol, whose parser
limits a head to 16 KiB itself, without a deadline.
"""

from __future__ import annotations

from typing import Any

from featureledger.server.guard import error_body

_LINGER_S = 1.0


def guarded_protocol(*, timeout_s: float, max_bytes: int) -> type[Any] | None:
    """The protocol class for uvicorn's ``http=``, or None without httptools."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        return None

    class GuardedHttpToolsProtocol(HttpToolsProtocol):  # type: ignore[misc]
        _fl_timer: Any = None
        _fl_head_bytes = 0
        _fl_refused = False
        _fl_in_head = False  # a request head began and is not complete yet

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._fl_arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._fl_disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if not self._fl_refused:  # after a refusal the rest is not parsed
                super().data_received(data)
                if self._fl_in_head:
                    # the head did not come whole with this data: its deadline runs now
                    # (armed here, not per request, so a whole head costs no timer)
                    self._fl_arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._fl_head_bytes = 0
            self._fl_in_head = True

        def on_url(self, url: bytes) -> None:
            if self._fl_count(len(url)):
                super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            if self._fl_count(len(name) + len(value)):
                super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._fl_in_head = False
            self._fl_disarm()
            if not self._fl_refused:
                super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            if not self._fl_refused:
                super().on_body(body)

        def on_message_complete(self) -> None:
            if not self._fl_refused:
                super().on_message_complete()

        # -- the limits ------------------------------------------------------------------
        def _fl_arm(self) -> None:
            if self._fl_timer is None and not self._fl_refused:
                self._fl_timer = self.loop.call_later(timeout_s, self._fl_expired)

        def _fl_disarm(self) -> None:
            if self._fl_timer is not None:
                self._fl_timer.cancel()
                self._fl_timer = None

        def _fl_expired(self) -> None:
            self._fl_timer = None
            if self.cycle is not None and not self.cycle.response_complete:
                # the previous request is still being answered (this one was pipelined
                # behind it): look again later rather than cut that answer off
                self._fl_arm()
                return
            self._fl_refuse(408, "request_timeout", (
                f"the request line and headers did not arrive within {timeout_s:g}s "
                "(server.body_timeout_s); send the whole request at once"))

        def _fl_count(self, n: int) -> bool:
            if self._fl_refused:
                return False
            self._fl_head_bytes += n
            if self._fl_head_bytes <= max_bytes:
                return True
            self._fl_refuse(431, "request_too_large", (
                f"the request line and headers are longer than {max_bytes} bytes "
                "(server.max_header_bytes); send fewer or shorter headers"))
            return False

        def _fl_refuse(self, status: int, code: str, message: str) -> None:
            self._fl_refused = True
            self._fl_disarm()
            if self.transport.is_closing():
                return
            body = error_body(code, message)
            reason = b"Request Timeout" if status == 408 else \
                b"Request Header Fields Too Large"
            self.transport.write(
                b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d"
                b"\r\nconnection: close\r\n\r\n%s" % (status, reason, len(body), body))
            # a lingering close: closing a socket with unread data in it resets the
            # connection, and the client may lose the answer; so only the sending side
            # is closed now, what the client still sends is read and dropped, and the
            # connection ends when the client closes it or a second later
            if self.transport.can_write_eof():
                self.transport.write_eof()
                self.loop.call_later(_LINGER_S, self.transport.close)
            else:
                self.transport.close()

    return GuardedHttpToolsProtocol
