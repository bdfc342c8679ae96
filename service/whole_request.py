"""A whole, plain HTTP/1.1 request in one chunk of bytes, read without the HTTP parser, to refuse or start it quickly.

Under overload the front door refuses most requests (``service/admission.py``). Through uvicorn's parser each
refusal cost about 33 µs of server CPU on the reference machine, half of it Python building a request the app never
sees (scope, headers list, response cycle, event). At 3 x capacity that is most of a core. When one read holds
exactly one complete request of the plainest kind, the front door can answer it from the bytes with a few
``bytes`` methods instead.

Anything else returns ``None`` and takes the parser's path, which answers it exactly as before: a partial request, a
second request behind the first, a chunked body, ``Expect``, ``Upgrade``, HTTP/1.0, folded or malformed header
lines, a repeated ``Content-Length``, a head over the header limit. So this reader only ever sees requests the parser
would also accept, and its framing (the body ends exactly where the bytes do) cannot desynchronise the connection.

A request read here is also served without the parser when there is room (``service/http_whole.py``), so it carries
what the ASGI scope needs, as the parser gives it: header names lower-cased, values without their leading blanks.
"""

from __future__ import annotations

import re
from typing import NamedTuple

_CRLF = b"\r\n"
_HEAD_END = b"\r\n\r\n"
#: Headers that send a request to the parser's path wherever they appear, and those it must have at most once.
_PARSER_ONLY = frozenset((b"transfer-encoding", b"expect", b"upgrade"))
_ONCE = (b"content-length", b"connection")
_METHODS = frozenset((b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH"))  # the parser knows more
_TARGET = re.compile(rb"/[!-~]*")  # origin form, visible ASCII ('%' and '#' are declined apart)
_NAME = re.compile(rb"[-!#$&'*+.^_`|~0-9a-z]+")  # a header name: an RFC 9110 token (lower case here)
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # in a value: what the parser refuses (HTAB is allowed)
_KEPT_ALIVE = (b"close", b"keep-alive")  # other Connection values go to the parser, which reads their tokens


class WholeRequest(NamedTuple):
    """What a refusal echoes or decides from (the request line's parts, the client's request id, ``Connection``),
    and what the rest of an ASGI scope holds."""

    method: str
    path: str
    request_id: bytes  # the client's X-Request-ID, b"" when none (admission decides whether it is fit to echo)
    close: bool  # the client asked for Connection: close
    body_bytes: int  # its Content-Length (0 when none)
    raw_path: bytes
    query_string: bytes
    headers: tuple[tuple[bytes, bytes], ...]  # (lower-case name, value as sent less its leading blanks)


#: Heads read before, by their bytes (None: not a plain request). A client sends the same head again and again (bar
#: an X-Request-ID of its own), and finding a head here costs a tenth of reading it. Cleared when full.
_SEEN: dict[bytes, WholeRequest | None] = {}
MAX_SEEN = 256


def whole_request(data: bytes, max_head_bytes: int) -> WholeRequest | None:
    """``data`` read as exactly one plain HTTP/1.1 request with its whole body, or ``None`` (module docstring)."""
    head_end = data.find(_HEAD_END)
    if head_end < 0 or head_end + 4 > max_head_bytes:
        return None
    head = data[:head_end]
    try:
        request = _SEEN[head]
    except KeyError:
        if len(_SEEN) >= MAX_SEEN:
            _SEEN.clear()
        request = _SEEN[head] = read_head(head)
    if request is None or len(data) != head_end + 4 + request.body_bytes:
        return None
    return request


def read_head(head: bytes) -> WholeRequest | None:
    """A request line and headers (without the blank line) read as a plain request's, or ``None``."""
    line_end = head.find(_CRLF)
    if line_end < 0:
        line_end = len(head)
    parts = head[:line_end].split(b" ")
    if len(parts) != 3 or parts[2] != b"HTTP/1.1" or parts[0] not in _METHODS or not _TARGET.fullmatch(parts[1]):
        return None
    if b"%" in parts[1] or b"#" in parts[1]:  # percent-encoded: the parser decodes the path; a fragment it drops
        return None
    # Every header line starts with CRLF here, and the last one ends with it; ``fields`` is ``lines`` lower-cased, so
    # an offset found in one is the same in the other.
    lines = head[line_end:] + _CRLF
    fields = lines.lower()
    if not fields.isascii():
        return None
    headers = _headers(lines, fields)  # None for folded lines, bare CR or LF, NUL, names or values the parser refuses
    if headers is None:
        return None
    names = [name for name, _ in headers]
    if not _PARSER_ONLY.isdisjoint(names) or any(names.count(name) > 1 for name in _ONCE):
        return None
    found = {name: value.rstrip() for name, value in reversed(headers)}  # each name's first value, trailing blanks off
    length = found.get(b"content-length")
    connection = found.get(b"connection", b"keep-alive").lower()
    if (length is not None and not length.isdigit()) or connection not in _KEPT_ALIVE:
        return None
    request_id = found.get(b"x-request-id", b"")  # echoed as the client wrote it
    raw_path, _, query = parts[1].partition(b"?")
    close = connection == b"close"
    body_bytes = int(length) if length else 0
    return WholeRequest(parts[0].decode(), raw_path.decode(), request_id, close, body_bytes, raw_path, query, headers)


def _headers(lines: bytes, fields: bytes) -> tuple[tuple[bytes, bytes], ...] | None:
    """The header lines as the parser hands them over, or ``None`` for a name or value the parser would refuse."""
    headers = []
    start = len(_CRLF)
    while start < len(lines):
        end = lines.find(_CRLF, start)
        colon = lines.find(b":", start, end)
        if colon < 0 or not _NAME.fullmatch(fields, start, colon):
            return None
        value = lines[colon + 1 : end].lstrip(b" \t")
        if _CONTROL.search(value):
            return None
        headers.append((fields[start:colon], value))
        start = end + len(_CRLF)
    return tuple(headers)
