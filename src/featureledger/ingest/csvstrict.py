"""Strict CSV: every line one record with the header's number of fields.

A CSV parser follows quotes across line ends, so one stray ``"`` folds every record up to
the next stray quote into one field, silently. Before a CSV file is parsed, one
vectorised pass over its bytes checks each line on its own:

* the line holds an even number of quote characters (a doubled ``""`` inside a quoted
  value counts as two), so no quoted value runs past the line end;
* outside quotes it holds as many delimiters as the header, so it has the header's
  number of fields.

Blank lines are skipped, as the parser skips them. A line that fails is a
:class:`CsvLineProblem` with its 1-based line number (the header is line 1). The ingestion
then refuses the file naming the lines (``mode="strict"``), or reads it without them and
lists them in the validation report (``mode="drop_invalid"``). The line's text is never
shown: it may be anything.

A source whose options ask for values spanning lines (``parse_options`` with
``newlines_in_values``), an escape character or its own read options is parsed as its
options say, without this check.

>>> problems, skip = scan_csv(b'id,name\\n1,"a\\n2,b,c\\n3,d\\n')
>>> [(p.line, p.problem) for p in problems]
[(2, 'a quote opens a value that does not close on this line'), (3, '3 fields; the header has 2')]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

CHUNK_BYTES = 1 << 20  # scanned at a time, cut at a line end: memory stays small and cached


@dataclass(frozen=True)
class CsvLineProblem:
    line: int  # 1-based, physical line in the file
    problem: str

    def to_dict(self, file: str) -> dict[str, Any]:
        return {"file": file, "line": self.line, "problem": self.problem}


def dialect(options: dict[str, Any]) -> tuple[int, int | None] | None:
    """(delimiter byte, quote byte or None) to scan with, or None when the source's own
    options take over (values across lines, escapes, read options)."""
    if "read_options" in options:
        return None
    parse = options.get("parse_options")
    if parse is None:
        return ord(","), ord('"')
    if (getattr(parse, "newlines_in_values", False) or getattr(parse, "escape_char", False)
            or not getattr(parse, "ignore_empty_lines", True)):
        return None
    delim = str(getattr(parse, "delimiter", ","))
    quote = getattr(parse, "quote_char", '"')
    if len(delim.encode()) != 1 or (quote and len(str(quote).encode()) != 1):
        return None
    return ord(delim), (ord(str(quote)) if quote else None)


def scan_csv(data: bytes | memoryview | np.ndarray, delimiter: int = ord(","),
             quote: int | None = ord('"')) -> tuple[list[CsvLineProblem], np.ndarray]:
    """The problems of every line of ``data`` and a sorted array of the 0-based indices of
    the lines that have one (to leave them out)."""
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    problems: list[CsvLineProblem] = []
    bad: list[np.ndarray] = []
    expected: int | None = None
    start, line0 = 0, 0
    while start < buf.size:
        end = min(start + CHUNK_BYTES, buf.size)
        if end < buf.size:  # cut after the last line end of the chunk
            last = np.flatnonzero(buf[start:end] == 10)
            end = start + int(last[-1]) + 1 if last.size else buf.size
        chunk = buf[start:end]
        expected, lines, found = _scan_chunk(chunk, delimiter, quote, expected, line0)
        problems += found
        if found:
            bad.append(np.array([p.line - 1 for p in found], dtype=np.int64))
        line0 += lines
        start = end
    return problems, (np.concatenate(bad) if bad else np.zeros(0, dtype=np.int64))


def _scan_chunk(chunk: np.ndarray, delimiter: int, quote: int | None, expected: int | None,
                line0: int) -> tuple[int | None, int, list[CsvLineProblem]]:
    # per-line sums over the bytes (np.add.reduceat over each line's segment, which
    # holds its line end, so none is empty): a few passes, no Python loop over lines
    ends = np.flatnonzero(chunk == 10)
    if ends.size == 0 or ends[-1] != chunk.size - 1:  # a last line without a line end
        ends = np.append(ends, chunk.size - 1)
    n = ends.size
    starts = np.concatenate([[0], ends[:-1] + 1])
    length = ends - starts + 1 - (chunk[ends] == 10)
    # a line of nothing (or of a lone carriage return) is blank: the parser skips it
    blank = (length == 0) | ((length == 1) & (chunk[starts] == 13))
    is_delim = (chunk == delimiter).view(np.uint8)
    is_quote = None if quote is None else (chunk == quote)
    if is_quote is None or not is_quote.any():
        fields = np.add.reduceat(is_delim.astype(np.int32), starts) + 1
        unbalanced = np.zeros(n, dtype=bool)
    else:
        # a delimiter is outside quotes when the parity of the quotes before it equals
        # the parity at its line's start; counting from each line's start means one bad
        # line does not shift the lines after it
        parity = np.bitwise_xor.accumulate(is_quote.view(np.uint8))
        line_parity = np.bitwise_xor.reduceat(is_quote.view(np.uint8), starts)
        unbalanced = line_parity.astype(bool)
        at_start = np.concatenate([[0], np.bitwise_xor.accumulate(line_parity)[:-1]])
        odd = np.add.reduceat((is_delim & parity).astype(np.int32), starts)
        even = np.add.reduceat(is_delim.astype(np.int32), starts) - odd
        fields = np.where(at_start == 0, even, odd) + 1
    found: list[CsvLineProblem] = []
    idx = np.flatnonzero(~blank)
    if idx.size == 0:
        return expected, n, found
    if expected is None:  # the header: the first line that is not blank
        head = int(idx[0])
        if unbalanced[head]:
            found.append(CsvLineProblem(line0 + head + 1, "the header has an unbalanced "
                                        "quote character"))
        expected = int(fields[head])
        idx = idx[1:]
    for i in idx[unbalanced[idx] | (fields[idx] != expected)]:
        i = int(i)
        if unbalanced[i]:
            what = "a quote opens a value that does not close on this line"
        else:
            what = f"{int(fields[i])} field{'s' if fields[i] != 1 else ''}; the header has {expected}"
        found.append(CsvLineProblem(line0 + i + 1, what))
    return expected, n, found


def without_lines(data: bytes | memoryview | np.ndarray, lines: np.ndarray) -> bytes:
    """``data`` with the given 0-based lines left out (each with its line end)."""
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    ends = np.flatnonzero(buf == 10)
    starts = np.concatenate([[0], ends + 1])
    stops = np.concatenate([ends + 1, [buf.size]])
    keep = np.ones(starts.size, dtype=bool)
    keep[lines[lines < starts.size]] = False
    raw = buf.tobytes()
    return b"".join(raw[a:b] for a, b, k in zip(starts, stops, keep, strict=True) if k)
