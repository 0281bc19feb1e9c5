"""Prefixed, time-ordered global ids (UUIDv7, RFC 9562).

>>> rid = new_id("run")
>>> rid.startswith("run_") and len(rid) == 40
True
>>> id_kind(rid)
'run'
"""

from __future__ import annotations

import os
import threading
import time
import uuid

from featureledger.errors import InvalidReferenceError

# dpr: deprecations; qc, alr, flg: quality checks, alerts, feature log
ID_PREFIXES = frozenset({"exp", "run", "mdl", "dep", "cmt", "ds", "seg", "dpr",
                         "qc", "alr", "flg"})

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def uuid7() -> uuid.UUID:
    """A UUIDv7: 48-bit Unix milliseconds, then a 12-bit counter and 62 random bits.

    The counter keeps ids from one process strictly increasing within a millisecond.
    """
    global _last_ms, _counter
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            _counter += 1
            if _counter > 0xFFF:  # counter exhausted: borrow the next millisecond
                _last_ms += 1
                _counter = 0
            ms = _last_ms
        else:
            _last_ms = ms
            _counter = int.from_bytes(os.urandom(2), "big") & 0x3FF  # leave headroom
        counter = _counter
    rand = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version
    value |= counter << 64
    value |= 0b10 << 62  # variant
    value |= rand
    return uuid.UUID(int=value)


def new_id(prefix: str) -> str:
    """A new id such as ``run_01933b6e-...``; ``prefix`` is one of ID_PREFIXES."""
    if prefix not in ID_PREFIXES:
        raise InvalidReferenceError(
            f"unknown id prefix {prefix!r}; use one of {', '.join(sorted(ID_PREFIXES))}"
        )
    return f"{prefix}_{uuid7()}"


def id_kind(value: str) -> str:
    """The prefix of a featureledger id, after checking its form."""
    prefix, sep, rest = value.partition("_")
    if not sep or prefix not in ID_PREFIXES:
        raise InvalidReferenceError(
            f"{value!r} is not a featureledger id; ids look like 'run_<uuid7>' with a prefix "
            f"among {', '.join(sorted(ID_PREFIXES))}"
        )
    try:
        uuid.UUID(rest)
    except ValueError:
        raise InvalidReferenceError(f"{value!r} has a malformed UUID part") from None
    return prefix


def id_time_ms(value: str) -> int:
    """The Unix millisecond timestamp embedded in an id."""
    id_kind(value)
    return uuid.UUID(value.partition("_")[2]).int >> 80


_ADJECTIVES = ("amber", "bold", "brisk", "calm", "clever", "crisp", "daring", "eager",
               "fair", "gentle", "glad", "grand", "keen", "kind", "lively", "lucid",
               "merry", "neat", "noble", "plucky", "proud", "quick", "quiet", "rapid",
               "sharp", "shy", "steady", "sunny", "swift", "tidy", "vivid", "witty")
_ANIMALS = ("badger", "beaver", "bison", "crane", "dingo", "eagle", "egret", "falcon",
            "ferret", "finch", "gecko", "heron", "ibis", "jackal", "koala", "lemur",
            "lynx", "marten", "newt", "ocelot", "otter", "panda", "puffin", "quail",
            "raven", "robin", "seal", "stoat", "tapir", "tern", "walrus", "wren")


def readable_name(value: str) -> str:
    """A name to call an object by when it was given none, drawn from its id's random
    end (so the same id always gives the same name): ``swift-heron-42``.

    >>> readable_name("run_01a2531d-9f89-737c-9e91-4d76e0045b16")
    'quiet-raven-14'
    """
    bits = int(value.rpartition("-")[2] or "0", 16)
    return (f"{_ADJECTIVES[bits % 32]}-{_ANIMALS[(bits >> 5) % 32]}-"
            f"{(bits >> 10) % 100}")
