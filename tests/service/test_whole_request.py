"""``whole_request`` reads only plain, complete, single requests; everything else goes to the HTTP parser.

A wrong "yes" here would answer a request the parser would have read differently, or leave bytes of it on the
connection as the start of a next request; a wrong "no" only costs speed. So the declines are the larger table.
"""

from __future__ import annotations

import httptools
import pytest

from service import whole_request as module
from service.whole_request import MAX_SEEN, read_head, whole_request

LIMIT = 64 * 1024
BODY = b"x" * 300


def _request(*headers: str, line: str = "POST /v2/models/m/infer HTTP/1.1", body: bytes = BODY) -> bytes:
    return ("\r\n".join([line, *headers]) + "\r\n\r\n").encode("latin-1") + body


PLAIN = ("Host: t", f"Content-Length: {len(BODY)}")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (_request(*PLAIN), ("POST", "/v2/models/m/infer", b"", False, len(BODY))),
        (
            _request("HOST: t", f"content-LENGTH:{len(BODY)}", "X-Request-ID:  Trace-7 ", "Connection: close"),
            ("POST", "/v2/models/m/infer", b"Trace-7", True, len(BODY)),
        ),
        (
            _request(f"Content-Length: {len(BODY)}", "x-request-id: last"),  # the id is the last header line
            ("POST", "/v2/models/m/infer", b"last", False, len(BODY)),
        ),
        (
            _request("Host: t", line="GET /v1/models?verbose=1 HTTP/1.1", body=b""),
            ("GET", "/v1/models", b"", False, 0),
        ),
        (_request(line="GET / HTTP/1.1", body=b""), ("GET", "/", b"", False, 0)),  # no header at all
        (
            _request("Connection: keep-alive", "Content-Length: 0", body=b""),
            ("POST", "/v2/models/m/infer", b"", False, 0),
        ),
    ],
)
def test_a_plain_complete_request_is_read(data: bytes, expected: tuple[str, str, bytes, bool, int]) -> None:
    read = whole_request(data, LIMIT)
    assert read is not None
    assert read[:5] == expected  # method, path, request id, close, body bytes (the scope's fields are tested below)


class _Parsed:
    """What uvicorn's parser (httptools) hands over for a request: the target, headers, and keep-alive."""

    def __init__(self, data: bytes) -> None:
        self.target = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.keep_alive: bool | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))  # as uvicorn stores them

    def on_headers_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()  # where uvicorn asks


@pytest.mark.parametrize(
    "data",
    [
        _request(*PLAIN),
        _request("HOST: t", f"content-LENGTH:{len(BODY)}", "X-Request-ID:  Trace-7 ", "Connection: close"),
        _request(
            "Host: t",
            "X-Tabs:\tv\t",
            "X-Empty:",
            "X-Inner: a  b",
            "Accept: */*",
            line="GET /a/b?c=1&d HTTP/1.1",
            body=b"",
        ),
        _request("Connection: Keep-Alive", "Content-Length: 0", "X-Odd: !#$&'*+.^_`|~", body=b""),
        _request("Connection: CLOSE", line="GET /v2/health/ready? HTTP/1.1", body=b""),
        _request("X-A: 1", "X-A: 2", "x-a: 3", line="DELETE /x HTTP/1.1", body=b""),
    ],
)
def test_what_a_scope_needs_is_what_the_parser_gives(data: bytes) -> None:
    read = whole_request(data, LIMIT)
    parsed = _Parsed(data)
    assert read is not None
    raw_path, _, query = parsed.target.partition(b"?")
    assert (read.raw_path, read.query_string, read.path) == (raw_path, query, raw_path.decode())
    assert list(read.headers) == parsed.headers
    assert read.close is not parsed.keep_alive


@pytest.mark.parametrize(
    "data",
    [
        _request(*PLAIN)[:-1],  # body not complete
        _request(*PLAIN) + b"G",  # a next request begins behind it
        _request(*PLAIN) * 2,  # pipelined
        _request(*PLAIN)[:40],  # head not complete
        _request("Host: t"),  # bytes behind a head without Content-Length are not a body
        _request("Transfer-Encoding: chunked", body=b"3\r\nabc\r\n0\r\n\r\n"),
        _request(*PLAIN, "Expect: 100-continue"),
        _request(*PLAIN, "Upgrade: h2c", "Connection: Upgrade"),
        _request(*PLAIN, "Connection: keep-alive, Upgrade"),
        _request(*PLAIN, f"Content-Length: {len(BODY)}"),  # repeated
        _request(*PLAIN, "Connection: close", "Connection: keep-alive"),
        _request("Content-Length: 3OO", body=b"x" * 300),
        _request("Content-Length: +300"),
        _request("Content-Length: ³"),  # a Unicode digit, as bytes
        _request("Content-Length:"),
        _request(*PLAIN, line="POST /v2/models/m/infer HTTP/1.0"),
        _request(*PLAIN, line="POST /v2/models/m/infer HTTP/2.0"),
        _request(*PLAIN, line="POST  /v2/models/m/infer HTTP/1.1"),
        _request(*PLAIN, line="POST * HTTP/1.1"),
        _request(*PLAIN, line="POST http://h/v2/models/m/infer HTTP/1.1"),
        _request(*PLAIN, line="P0ST /v2/models/m/infer HTTP/1.1"),
        _request(*PLAIN, line="post /v2/models/m/infer HTTP/1.1"),  # methods the parser refuses, or rarely sees
        _request(*PLAIN, line="BREW /v2/models/m/infer HTTP/1.1"),
        _request(*PLAIN, line="POST /v2/health/re%61dy HTTP/1.1"),  # a probe, once decoded: never refused
        _request(*PLAIN, "X-Folded: a", " b"),  # obsolete line folding
        _request(*PLAIN, "X-Folded: a", "\tb"),
        _request(*PLAIN, "X-Bare: a\nb"),  # a bare line feed
        _request(*PLAIN, "X-Bare: a\rb"),  # a bare carriage return
        _request(*PLAIN, "X-Nul: a\x00b"),
        _request(*PLAIN, "X-Latin: caf\xe9"),
        _request(*PLAIN, "X-Pad: " + "p" * LIMIT),  # head over the header limit
        _request(*PLAIN, "X Space: a"),  # header names the parser refuses
        _request(*PLAIN, "X-Space : a"),
        _request(*PLAIN, ": a"),
        _request(*PLAIN, "X-Colon"),
        _request(*PLAIN, "X-Ctl: a\x01b"),  # control characters the parser refuses in a value
        _request(*PLAIN, "X-Del: a\x7fb"),
        _request(*PLAIN, "Connection: foo, close"),  # token lists: the parser decides what they mean
        _request(*PLAIN, "Connection: te"),
        _request(*PLAIN, line="POST /v2/models/m/infer#top HTTP/1.1"),  # a fragment the parser drops
        _request(*PLAIN, line="POST /v2/models/\x7fm/infer HTTP/1.1"),
        b"\r\n\r\n",
        b"",
    ],
)
def test_anything_else_is_left_to_the_parser(data: bytes) -> None:
    assert whole_request(data, LIMIT) is None


def test_a_head_seen_before_is_read_as_the_first_time_and_the_memory_is_bounded() -> None:
    module._SEEN.clear()
    data = _request(*PLAIN)
    first = whole_request(data, LIMIT)
    assert first is not None
    assert len(module._SEEN) == 1
    assert whole_request(data, LIMIT) is first  # from memory
    assert whole_request(data[:-1], LIMIT) is None  # the same head, a body one byte short: still checked
    assert whole_request(_request("Transfer-Encoding: chunked"), LIMIT) is None
    assert whole_request(_request("Transfer-Encoding: chunked"), LIMIT) is None  # a "no" is remembered as one
    for number in range(2 * MAX_SEEN):
        ident = f"X-Request-ID: r{number}"
        assert whole_request(_request(*PLAIN, ident), LIMIT) == read_head(_request(*PLAIN, ident, body=b"")[:-4])
        assert len(module._SEEN) <= MAX_SEEN
