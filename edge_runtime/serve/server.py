"""The socket shell: `Server` accepts connections within the client limit, `Handler` reads one request
at a time within the head and body limits and hands it to `App.handle`."""

from __future__ import annotations

import errno
import http.client
import socket
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from ..capture import log_stderr
from ..errors import UsageError
from .app import App
from .http import BODY_DEADLINE_S, BOUNDARY, MAX_HEAD_BYTES, STREAM, HttpError, Response, error_response

DEFAULT_PORT = 8080
MAX_CLIENTS = 32  # connections at once, viewers included; one thread each
CLIENT_TIMEOUT_S = 10.0  # per socket read or write: a stalled viewer or half-sent request is dropped
STREAM_SNDBUF = 256 * 1024  # per viewer: the most a stalled viewer holds in the kernel


class HeadLimit:
    """A request's rfile that allows at most `limit` bytes for the request line and headers together.

    BaseHTTPRequestHandler alone accepts 100 header lines of 64 KB each,
    6.5 MB per connection; 16 KB is more than any browser or curl sends.
    """

    def __init__(self, raw, limit: int):
        self.raw, self.limit, self.left = raw, limit, limit

    def reset(self, limit: int | None) -> None:
        self.left = limit

    def readline(self, size: int = -1) -> bytes:
        if self.left is None:
            return self.raw.readline(size)
        cap = self.left + 1 if size is None or size < 0 else min(size, self.left + 1)
        line = self.raw.readline(cap)
        self.left -= len(line)
        if self.left < 0:
            raise http.client.LineTooLong(f"request line and headers over {self.limit} bytes")
        return line

    def __getattr__(self, name):
        return getattr(self.raw, name)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the page's polling reuses its connection
    # Headers and body go out in separate writes: without this, Nagle's algorithm
    # and the client's delayed ACK hold each small JSON answer back by ~40 ms.
    disable_nagle_algorithm = True
    server_version = "fashion-edge"

    def version_string(self) -> str:
        return self.server_version  # no Python version: nothing for a scanner to match

    def setup(self) -> None:
        self.timeout = self.server.client_timeout  # StreamRequestHandler sets it on the socket
        super().setup()
        self.rfile = HeadLimit(self.rfile, MAX_HEAD_BYTES)

    def handle_one_request(self) -> None:
        self.rfile.reset(MAX_HEAD_BYTES)
        try:
            super().handle_one_request()
        except http.client.LineTooLong as e:  # in the request line; header lines are caught by the stdlib
            self.requestline, self.request_version, self.command = "", "", ""
            self.send_error(414, str(e))
        except TimeoutError:
            self.close_connection = True

    def handle_expect_100(self) -> bool:
        refusal = self.server.app.precheck(self.command, self.path, self.headers)
        if refusal is not None:
            self._send(refusal)  # and the client never sends the body
            return False
        return super().handle_expect_100()

    def _handle(self) -> None:
        self.rfile.reset(None)  # the head is read; the body has its own limit
        app: App = self.server.app
        response = app.handle(self.command, self.path, self.headers, self._read_body)
        if response is STREAM:
            self._stream(app)
        else:
            self._send(response)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _handle

    def _read_body(self, n: int) -> bytes:
        deadline = time.monotonic() + BODY_DEADLINE_S
        chunks, left = [], n
        try:
            while left:
                if time.monotonic() > deadline:
                    raise HttpError(408, f"request body not received within {BODY_DEADLINE_S:.0f} s")
                chunk = self.rfile.read1(min(left, 65536))
                if not chunk:
                    raise HttpError(400, f"request body ended after {n - left} of {n} bytes")
                chunks.append(chunk)
                left -= len(chunk)
        except TimeoutError:
            raise HttpError(408, f"request body stalled after {n - left} of {n} bytes") from None
        return b"".join(chunks)

    def _send(self, response: Response) -> None:
        if response.status >= 400:
            self.close_connection = True  # an unread body may follow; start afresh
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            for name, value in response.headers:
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(response.body)
        except OSError:  # the client left before the answer
            self.close_connection = True

    def _stream(self, app: App) -> None:
        self.close_connection = True  # the stream is the rest of this connection
        try:
            # A small send buffer bounds what a stalled viewer holds and lets its
            # write time out sooner; the kernel would otherwise grow it to megabytes.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_SNDBUF)
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Connection", "close")
            self.end_headers()
        except OSError:
            return
        app.stream(self.wfile.write)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The stdlib's own errors (bad request line, headers too long) as JSON too."""
        text = message or HTTPStatus(code).phrase
        if explain and explain not in text:
            text = f"{text}: {explain}"
        if getattr(self, "request_version", "") == "HTTP/0.9":  # the stdlib's guess for a malformed line
            self.request_version = "HTTP/1.0"  # so the answer has a status line and headers
        self.close_connection = True
        self._send(error_response(code, text))

    def log_message(self, format: str, *args) -> None:
        pass  # a line per request would flood the journal: the page polls several times a second


def refuse(sock: socket.socket, body: bytes) -> None:
    """Answer 503 on a connection over the client limit, without a thread for it."""
    head = (f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: 5\r\nConnection: close\r\n\r\n").encode()
    try:
        sock.settimeout(0.5)
        sock.sendall(head + body)
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(0)  # read what arrived, so closing doesn't reset the connection under the answer
        sock.recv(65536)
    except OSError:
        pass


class Server(ThreadingHTTPServer):
    """ThreadingHTTPServer with a client limit, one-line error logs and no reverse DNS lookups."""

    daemon_threads = True  # viewers never hold the process at exit
    block_on_close = False
    request_queue_size = 16

    def __init__(self, address: tuple[str, int], app: App, max_clients: int = MAX_CLIENTS,
                 client_timeout: float = CLIENT_TIMEOUT_S, log: Callable[[str], None] = log_stderr):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.app, self.client_timeout, self.max_clients, self.log = app, client_timeout, max_clients, log
        self.clients, self.refused = 0, 0
        self._lock = threading.Lock()
        self._busy = error_response(503, f"too many clients ({max_clients}); try again in a moment").body
        super().__init__(address, Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's fully qualified name: a DNS
        # query that takes seconds on a Pi without a network. Nothing here uses it.
        import socketserver
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def process_request(self, request, client_address) -> None:
        with self._lock:
            full = self.clients >= self.max_clients
            if full:
                self.refused += 1
            else:
                self.clients += 1
        if full:
            refuse(request, self._busy)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release()

    def _release(self) -> None:
        with self._lock:
            self.clients -= 1

    def handle_error(self, request, client_address) -> None:
        kind, error, _ = sys.exc_info()
        if isinstance(error, OSError):  # a client that vanished mid-request: routine
            return
        self.log(f"error: request from {client_address[0]}: {kind.__name__}: {error}")


def make_server(host: str, port: int, app: App, max_clients: int, client_timeout: float) -> Server:
    """Bind, or a UsageError that says why not and what to do."""
    try:
        return Server((host, port), app, max_clients, client_timeout, app.log)
    except socket.gaierror as e:
        raise UsageError(f"--host {host}: not an address of this machine ({e.strerror})") from e
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise UsageError(f"port {port} on {host} is in use (another serve?); stop it or pick another "
                             f"with --port (ss -ltnp 'sport = :{port}' names it)") from e
        if e.errno == errno.EACCES:
            raise UsageError(f"port {port} needs root privileges; use one above 1023, such as {DEFAULT_PORT}") from e
        if e.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
            raise UsageError(f"--host {host}: not an address of this machine ({e.strerror})") from e
        raise UsageError(f"can't listen on {host}:{port} ({e.strerror or e})") from e

