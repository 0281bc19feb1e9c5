"""The push log: a write-ahead log that makes a push durable before it is answered.

Pushed rows land offline as micro-batched commits (:mod:`featureledger.online.push`);
until their commit lands they live in memory and in this log. Each pending commit has one
*segment*, a file named after the commit its rows will land in::

    <repo>/.featureledger/push-log/<project>/<view>/v<version>/<commit_id>.wal

It lives under the repository's data folder, beside the embedded stores, because it is
local by nature (an fsync on this machine's disk); the project and the view version scope
it, so one folder never holds two projects' or two versions' rows.

A segment is a run of framed records, ``length (u32) | crc32 (u32) | payload`` (the crc
covers the length and the payload): first a
header (JSON: format, project, view, version, commit id, run), then one record per pushed
batch (its validated rows as an Arrow IPC stream, the exact types the commit will store).
A push is answered only after the ``fdatasync`` that covers its record, so a record torn
by a crash, and anything after it, was never acknowledged; a reader stops there.

Concurrent pushes share syncs (group commit): a writer appends under the segment's lock
and syncs outside it, and a writer whose bytes another writer's sync already covered
returns at once, so N concurrent pushes cost far fewer than N syncs.

The process writing a segment holds an exclusive ``flock`` on it until the segment is
closed, and the kernel drops the lock when the process dies. Replay
(:meth:`PushLog.recoverable`) takes only segments it can lock, so it never takes a live
writer's segment, whether the writer is another process or another store in this one. A
segment is created as ``<commit_id>.open``, locked, given a durable header and only then
renamed to ``.wal``, so replay never meets a segment that is being born.

>>> import tempfile, pyarrow as pa
>>> log = PushLog(tempfile.mkdtemp(), "demo")
>>> seg = log.create("stats", 1, "cmt_x", {"run_id": None})
>>> seg.sync(seg.append(encode_batch(pa.table({"k": [1, 2]}))))
>>> [r.batches[0].num_rows for r in PushLog(log.root, "demo").recoverable()]  # locked: skipped
[]
>>> seg.close()
>>> [(r.commit_id, r.batches[0].to_pydict()) for r in log.recoverable()]
[('cmt_x', {'k': [1, 2]})]
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from featureledger.errors import ConfigError, StateError, StorageError

if TYPE_CHECKING:
    import pyarrow as pa

FORMAT = 1
SUFFIX = ".wal"
BIRTH_SUFFIX = ".open"
_FRAME = struct.Struct(">II")  # payload length, crc32 of the payload
# fdatasync flushes the data and the size (all a reader needs); macOS only has fsync
_datasync = getattr(os, "fdatasync", os.fsync)


def _flock() -> Any:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        raise StateError(
            "the push log needs POSIX file locks (fcntl), which this platform lacks; "
            "run the feature server on Linux or macOS"
        ) from None
    return fcntl


def encode_batch(table: pa.Table) -> bytes:
    """One pushed batch as an Arrow IPC stream (types and nulls exactly as validated)."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def decode_batch(payload: bytes) -> pa.Table:
    import pyarrow as pa

    return pa.ipc.open_stream(payload).read_all()


def _crc(length: int, payload: bytes) -> int:
    # the length is covered too: a run of zeros (a file extended by a crash before its
    # data reached the disk) must not read as an empty record
    return zlib.crc32(payload, zlib.crc32(length.to_bytes(4, "big")))


def _frame(payload: bytes) -> bytes:
    return _FRAME.pack(len(payload), _crc(len(payload), payload)) + payload


def _read_records(data: bytes) -> tuple[list[bytes], bool]:
    """The whole records of a segment, and whether bytes were left over (a torn tail)."""
    out, pos = [], 0
    while pos + _FRAME.size <= len(data):
        n, crc = _FRAME.unpack_from(data, pos)
        start, end = pos + _FRAME.size, pos + _FRAME.size + n
        if n == 0 or end > len(data) or _crc(n, data[start:end]) != crc:
            break
        out.append(data[start:end])
        pos = end
    return out, pos < len(data)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _makedirs(path: Path) -> None:
    """``mkdir -p`` whose new entries survive a power cut (each parent is synced)."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            d.mkdir()
        _fsync_dir(d.parent)


def _storage_error(action: str, path: Path, exc: OSError) -> StorageError:
    return StorageError(
        f"cannot {action} the push log {path}: {exc.strerror or exc}. Nothing of this push "
        "was acknowledged; free disk space or fix the folder's permissions and push again"
    )


class Segment:
    """One pending commit's file: appended by pushes, removed once its commit landed.

    A failed append or sync marks the segment ``broken``: after a failed ``fdatasync``
    the kernel may report later syncs as clean although the data never reached the disk,
    and a half-written record would hide every record after it from replay. A broken
    segment takes no more records; the buffer lands its commit (from memory) first.
    """

    def __init__(self, path: Path, fd: int, header: dict[str, Any]) -> None:
        self.path = path
        self.header = header
        self._fd = fd
        self._write_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._written = 0  # records written (a sync token)
        self._synced = 0  # records known durable
        self._closed = False
        self.landed = False  # removed because its commit landed: every record is durable
        self.broken = False

    @property
    def commit_id(self) -> str:
        return str(self.header["commit_id"])

    def append(self, payload: bytes) -> int:
        """Write one record (not yet durable); returns the token to pass to ``sync``."""
        frame = _frame(payload)
        with self._write_lock:
            if self._closed or self.broken:
                raise StateError(f"push log segment {self.path} takes no more records; "
                                 "push again")
            try:
                view = memoryview(frame)
                while view:
                    view = view[os.write(self._fd, view):]
            except OSError as exc:
                self.broken = True
                raise _storage_error("append to", self.path, exc) from None
            self._written += 1
            return self._written

    def sync(self, token: int) -> None:
        """Return once record ``token`` (and every record before it) is on disk."""
        with self._sync_lock:
            # the segment's commit landed: the commit made every record durable
            if self.landed:
                return
            if self._synced >= token:  # another writer's sync covered this record
                return
            if self._closed or self.broken:
                raise StateError(f"push log segment {self.path} was closed before this "
                                 "push was on disk; push again")
            target = self._written  # every record counted here has been written
            try:
                _datasync(self._fd)
            except OSError as exc:
                self.broken = True
                raise _storage_error("sync", self.path, exc) from None
            self._synced = target

    def close(self) -> None:
        """Release the file (and its lock); the file stays for replay."""
        with self._write_lock, self._sync_lock:
            if not self._closed:
                self._closed = True
                os.close(self._fd)

    def remove(self) -> None:
        """Delete the segment (its commit landed), then release it."""
        with self._write_lock, self._sync_lock:
            if self._closed:
                return
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            with contextlib.suppress(OSError):
                _fsync_dir(self.path.parent)
            self.landed = True
            self._closed = True
            os.close(self._fd)


@dataclass
class RecoveredSegment:
    """A segment left by a process that is gone: locked by the caller until closed."""

    segment: Segment
    batches: list[Any] = field(default_factory=list)  # pyarrow Tables, in push order
    torn: bool = False  # bytes after the last whole record (a write cut by the crash)

    @property
    def header(self) -> dict[str, Any]:
        return self.segment.header

    @property
    def commit_id(self) -> str:
        return self.segment.commit_id

    @property
    def path(self) -> Path:
        return self.segment.path


class PushLog:
    """The push log of one project: one folder per view version, one segment per commit."""

    def __init__(self, root: str | Path, project: str) -> None:
        if project in ("", ".", "..") or any(c in project for c in "/\\\0"):
            raise ConfigError(
                f"project name {project!r} cannot name the push log's folder; use a name "
                "without '/', '\\' or NUL that is not '.' or '..' (set 'project:' in "
                "featureledger.yaml)"
            )
        self.root = Path(root)
        self.project = project
        self.base = self.root / project

    def folder(self, view: str, version: int) -> Path:
        return self.base / view / f"v{int(version)}"

    def create(self, view: str, version: int, commit_id: str,
               header: dict[str, Any]) -> Segment:
        """A new locked segment for ``commit_id`` whose header is durable."""
        fcntl = _flock()
        folder = self.folder(view, version)
        birth = folder / f"{commit_id}{BIRTH_SUFFIX}"
        final = folder / f"{commit_id}{SUFFIX}"
        head = {"format": FORMAT, "project": self.project, "view": view,
                "version": int(version), "commit_id": commit_id, **header}
        try:
            _makedirs(folder)
            fd = os.open(birth, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        except OSError as exc:
            raise _storage_error("create", birth, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, _frame(json.dumps(head, sort_keys=True).encode()))
            _datasync(fd)
            os.rename(birth, final)
            _fsync_dir(folder)
        except OSError as exc:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(birth)
            raise _storage_error("create", final, exc) from None
        return Segment(final, fd, head)

    def recoverable(self) -> Iterator[RecoveredSegment]:
        """Segments no live process holds, oldest first, each locked until closed.

        Segments that never got their final name (a crash while one was being created)
        hold no acknowledged row and are removed on the way.
        """
        if not self.base.is_dir():
            return
        fcntl = _flock()
        for folder in sorted(p for p in self.base.glob("*/v*") if p.is_dir()):
            for birth in sorted(folder.glob(f"*{BIRTH_SUFFIX}")):
                got = self._lock(birth, fcntl)
                if got is not None:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(birth)
                    os.close(got)
            # commit ids are UUIDv7: sorted by name is sorted by creation time
            for path in sorted(folder.glob(f"*{SUFFIX}")):
                fd = self._lock(path, fcntl)
                if fd is None:
                    continue
                try:
                    with open(path, "rb") as f:
                        data = f.read()
                except OSError as exc:
                    os.close(fd)
                    raise _storage_error("read", path, exc) from None
                records, torn = _read_records(data)
                header: dict[str, Any] = {}
                if records:
                    with contextlib.suppress(ValueError):
                        header = json.loads(records[0])
                if header.get("format") != FORMAT or not header.get("commit_id"):
                    os.close(fd)
                    raise StorageError(
                        f"push log segment {path} has no readable header; it was not "
                        "written by this version of featureledger. Move it out of "
                        f"{folder} and reopen the store"
                    )
                yield RecoveredSegment(Segment(path, fd, header),
                                       [decode_batch(r) for r in records[1:]], torn)

    @staticmethod
    def _lock(path: Path, fcntl: Any) -> int | None:
        """An fd holding the exclusive lock of ``path``, or None if a live writer has it
        (or the file went away meanwhile)."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            # the writer may have removed (landed) the file between our open and lock
            if os.fstat(fd).st_ino != os.stat(path).st_ino:
                raise FileNotFoundError(path)
        except FileNotFoundError:
            os.close(fd)
            return None
        return fd

    def segment_count(self) -> int:
        """Segments on disk (live or left behind), for health reports."""
        if not self.base.is_dir():
            return 0
        return sum(1 for _ in self.base.glob(f"*/v*/*{SUFFIX}"))
