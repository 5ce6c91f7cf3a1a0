"""HTTP's side of `serve`, pure: a request's head parsed strictly, answers as values, body limits.

`parse_head` turns the bytes up to the blank line into a `Request`, or an
HttpError with the status a careful server gives (RFC 9110/9112): 400 for
a malformed line, a header without a colon or folded onto the next line,
two Host or two Content-Length headers, 414 for a request line over the
head limit, 431 for too many or too long headers, 501 for an unknown
method, 505 for another HTTP version. `Response` is what an endpoint
answers; `HttpError` is an answer other than 200 raised from anywhere below
`App.handle`, with a one-line message.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Mapping

MAX_HEAD_BYTES = 16 * 1024  # request line + headers (the stdlib alone allows 100 lines of 64 KB)
MAX_HEADERS = 64  # header lines in one request; a browser sends about 15
MAX_JSON_BYTES = 4096  # POST /api/label
BODY_DEADLINE_S = 30.0  # a whole request body, however slowly it trickles in
BOUNDARY = "frame"
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")
# Headers that mean one thing: a second copy is how request smuggling and
# Host confusion start, so two of them are refused rather than picked from.
SINGLE = ("host", "content-length", "content-type", "transfer-encoding", "authorization", "origin", "expect")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET = re.compile(rb"[\x21-\x7e]+")  # visible ASCII: no space, control character or NUL
_DIGITS = re.compile(r"[0-9]{1,15}")  # ASCII only: str.isdigit() takes '²' and int() then fails
HEAD_END = re.compile(rb"\r?\n\r?\n")


class Headers(dict):
    """Header names are case-insensitive: stored lower-case, looked up in any case."""

    def get(self, name: str, default=None):
        return super().get(name.lower(), default)

    def __getitem__(self, name: str):
        return super().__getitem__(name.lower())

    def __contains__(self, name) -> bool:
        return super().__contains__(str(name).lower())


@dataclass
class Request:
    method: str
    target: str
    version: str
    headers: Headers = field(default_factory=Headers)

    @property
    def keep_alive(self) -> bool:
        """HTTP/1.1 keeps the connection unless told to close; 1.0 only when asked to keep it."""
        tokens = {t.strip().lower() for t in (self.headers.get("Connection") or "").split(",")}
        return "keep-alive" in tokens if self.version == "HTTP/1.0" else "close" not in tokens

    @property
    def expects_continue(self) -> bool:
        return (self.headers.get("Expect") or "").strip().lower() == "100-continue"


class HttpError(Exception):
    """An answer other than 200: its status and a one-line message for {"error": ...}."""

    def __init__(self, status: int, message: str, headers: tuple[tuple[str, str], ...] = ()):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()

    def json(self):
        return json.loads(self.body)


STREAM = object()  # App.handle's answer for a viewer of /stream.mjpg: the handler streams it


def json_response(obj, status: int = 200, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return Response(status, json.dumps(obj).encode(), "application/json", headers)


def error_response(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    """{"error": "..."}: one line, whatever the message was made of."""
    return json_response({"error": " ".join(str(message).split())}, status, headers)


def parse_head(data: bytes, limit: int = MAX_HEAD_BYTES) -> Request:
    """The request line and headers (the bytes before the blank line) -> Request, or HttpError. Pure."""
    lines = re.split(rb"\r?\n", data)
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0]:  # RFC 9112 2.2: blank lines before the request line are ignored
        lines.pop(0)
    if not lines:
        raise HttpError(400, "empty request")
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise HttpError(400, "bad request line: expected METHOD /path HTTP/1.1")
    method, target, version = parts
    if not _TOKEN.fullmatch(method):
        raise HttpError(400, "bad request line: the method is not a word")
    if method.decode() not in METHODS:
        raise HttpError(501, f"{method.decode()[:20]} is not a method this server knows")
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        if re.fullmatch(rb"HTTP/\d(\.\d)?", version):
            raise HttpError(505, f"{version.decode()} is not spoken here; use HTTP/1.1")
        raise HttpError(400, "bad request line: expected HTTP/1.1 at its end")
    if not _TARGET.fullmatch(target):
        raise HttpError(400, "bad request target: spaces, control characters and non-ASCII bytes must be %-encoded")
    if len(lines) - 1 > MAX_HEADERS:
        raise HttpError(431, f"more than {MAX_HEADERS} header lines")
    headers = Headers()
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            raise HttpError(400, "a header folded onto the next line (obsolete line folding) is not accepted")
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            raise HttpError(400, f"bad header line {line[:40].decode('latin-1')!r}: expected 'Name: value'")
        key = name.decode().lower()
        text = value.strip(b" \t").decode("latin-1")
        if key in headers:
            if key in SINGLE:
                raise HttpError(400, f"two {name.decode()} headers")
            text = f"{headers[key]}, {text}"
        dict.__setitem__(headers, key, text)
    return Request(method.decode(), target.decode("ascii"), version.decode(), headers)


def body_length(headers: Mapping[str, str], limit: int) -> int:
    """The request body's size from Content-Length, or HttpError 411/400/413 before anything is read. Pure."""
    text = headers.get("Content-Length")
    if headers.get("Transfer-Encoding"):
        if text is not None:  # which one frames the body? Two answers is how requests get smuggled
            raise HttpError(400, "both Content-Length and Transfer-Encoding: send one Content-Length")
        raise HttpError(411, "send the body with a Content-Length; chunked transfer is not accepted")
    if text is None:
        raise HttpError(411, "a Content-Length header is needed")
    if not _DIGITS.fullmatch(text.strip()):
        raise HttpError(400, f"bad Content-Length {text[:40]!r}: expected a number of bytes in ASCII digits")
    n = int(text)
    if n > limit:
        raise HttpError(413, f"body is {n} bytes, more than the {limit} allowed here")
    return n



def part_header(length: int) -> bytes:
    """The header of one JPEG in the multipart stream. Pure."""
    return (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {length}\r\n\r\n").encode()

