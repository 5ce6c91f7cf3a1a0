"""HTTP's side of `serve`, pure: answers as values, limits on a request's head and body.

`Response` is what an endpoint answers; `HttpError` is an answer other than
200 raised from anywhere below `App.handle`, with a one-line message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Mapping

MAX_HEAD_BYTES = 16 * 1024  # request line + headers (the stdlib alone allows 100 lines of 64 KB)
MAX_JSON_BYTES = 4096  # POST /api/label
BODY_DEADLINE_S = 30.0  # a whole request body, however slowly it trickles in
BOUNDARY = "frame"


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


def body_length(headers: Mapping[str, str], limit: int) -> int:
    """The request body's size from Content-Length, or HttpError 411/400/413 before anything is read. Pure."""
    if headers.get("Transfer-Encoding"):
        raise HttpError(411, "send the body with a Content-Length; chunked transfer is not accepted")
    text = headers.get("Content-Length")
    if text is None:
        raise HttpError(411, "a Content-Length header is needed")
    if not text.strip().isdigit():
        raise HttpError(400, f"bad Content-Length {text!r}")
    n = int(text)
    if n > limit:
        raise HttpError(413, f"body is {n} bytes, more than the {limit} allowed here")
    return n



def part_header(length: int) -> bytes:
    """The header of one JPEG in the multipart stream. Pure."""
    return (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {length}\r\n\r\n").encode()

