"""Small online reads answered on the event loop, when the online store allows it.

Where the time went with the cache off (``py-spy record`` on ``featureledger serve``
pinned to one core, 500 requests/s, one key each): the SQLite read itself was a few
percent of the server's samples; handing it to the read pool (a ``concurrent`` future,
the executor's queue and semaphore, ``call_soon_threadsafe``, then the loop woken with
the answer) cost more CPU than the read, and each request woke three threads in turn
(the loop, a worker, the loop again) where a cached one wakes one. On a shared core every
wake-up is one more chance to wait for the scheduler. Answered on the loop, side by side
on one core: 108-117 µs of server CPU per request at saturation against 157-165 µs
through the pool (7,959-8,812 against 5,955-6,206 requests/s).

So a read a store can answer without waiting (``loop_reader()``: SQLite's point and
small ``IN`` reads on a connection that never waits for a lock) is answered on the loop
when :meth:`InlineReads.reader` allows it, and on the read pool otherwise:

* at most ``MAX_KEYS`` entity rows (larger reads take longer than a request should hold
  the loop, and go to the pool as before);
* the online store's circuit breaker is closed, and no health probe of the store has
  been running longer than ``BUDGET_S`` (a store that hangs is never read on the loop);
* no read on the loop failed, or waited longer than ``BUDGET_S``, in the last
  ``PAUSE_S``: a disk that stalled once sends reads to the pool, where the deadline and
  the breaker bound them, until it has been quiet for a while. A read that was slow only
  because the process was preempted (the thread made no voluntary context switch while
  it ran: it never waited, other processes had the core) does not count: on a loaded
  machine that happens every few seconds, and the pool would be slower still.

The request is otherwise the same: the route checked its token, the read runs as its
principal, and the service answers on the loop only what needs neither the registry
nor the access policy (a plan already built and checked for that principal, no change
check due, no deprecated feature: see ``OnlineService.get_online_features_nowait``), so
admission, auditing and deprecated-read counting happen on the pool as before. A read
on the loop that fails is answered by the pool, so its error, its effect on the breaker
and its status are those of the normal read.
"""

from __future__ import annotations

import time
from typing import Any

try:
    from resource import RUSAGE_THREAD, getrusage

    def _waits() -> int:
        """Voluntary context switches of this thread so far (times it blocked)."""
        return getrusage(RUSAGE_THREAD).ru_nvcsw
except ImportError:  # not Linux: every slow read counts as one that waited
    def _waits() -> int:
        return -1

from featureledger.online.stores import RowReader
from featureledger.server.admission import CircuitBreaker


class InlineReads:
    """Decides, per request, whether its read may run on the event loop."""

    MAX_KEYS = 16
    BUDGET_S = 0.02  # a healthy point read takes tens of microseconds; the GIL, a few ms
    PAUSE_S = 10.0

    def __init__(self, reader: RowReader, breaker: CircuitBreaker, probing_s: Any, *,
                 clock: Any = time.perf_counter) -> None:
        self._reader = reader
        self._breaker = breaker
        self._probing_s = probing_s  # seconds the store's health probe has been running
        self._clock = clock
        self._paused_until = 0.0
        self.answered = 0  # reads answered on the loop
        self.declined = 0  # reads sent to the pool by this gate (too large, paused, ...)
        self.pauses = 0  # times reads on the loop were paused (slow or failed)

    def reader(self, entities: dict[str, Any]) -> RowReader | None:
        """The reader for a request with ``entities`` (columns), or None: use the pool."""
        rows = 0
        for values in entities.values():
            rows = len(values)
            break
        if (rows > self.MAX_KEYS or self._breaker.state != "closed"
                or self._clock() < self._paused_until
                or self._probing_s() > self.BUDGET_S):
            self.declined += 1
            return None
        return self._reader

    waits = staticmethod(_waits)  # read before a read on the loop, passed to took()

    def took(self, seconds: float, waits_before: int) -> None:
        """A read on the loop took ``seconds``; one that was slow because it waited
        (``waits()`` moved from ``waits_before``) pauses reads on the loop."""
        self.answered += 1
        if seconds > self.BUDGET_S and (waits_before < 0 or _waits() != waits_before):
            self.pause()

    def pause(self) -> None:
        """Send reads to the pool for ``PAUSE_S`` (a read on the loop was slow or failed)."""
        self._paused_until = self._clock() + self.PAUSE_S
        self.pauses += 1

    @property
    def paused(self) -> bool:
        return self._clock() < self._paused_until

    def stats(self) -> dict[str, Any]:
        return {"answered": self.answered, "declined": self.declined,
                "pauses": self.pauses, "paused": self.paused}
