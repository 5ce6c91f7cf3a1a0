"""The socket shell: one thread reads request heads for every connection; a worker thread per request.

Why not a thread per connection (the standard library's ThreadingHTTPServer,
which this replaced): a client that sends its headers a byte every few
seconds then holds a thread and a client slot for as long as it likes, and
40 such connections locked every real request out (503). Here one `Server`
thread waits on all connections at once (`selectors`) and collects each
request head, with a deadline for the whole head, not per read. Only a
complete head gets a worker thread and one of `max_clients` slots; an idle
keep-alive connection is handed back to that thread and holds neither.
Connections still sending their head are bounded too (`max_pending`): when
full, the one that has waited longest is dropped.

A worker (`Exchange`) parses the head (http.parse_head), reads the body
with its own deadline when `App.handle` asks for it, writes the answer, and
streams /stream.mjpg to a viewer until it goes or the server stops; a write
that blocks for the client timeout drops the client.

`drain()` is for stopping: no new requests, reads end at once (shutdown of
the read side), and requests already being worked on (an upload being
decoded, a photo being written) finish and are answered. Only then may the
process end: a thread still inside OpenCV or the interpreter when Python
finalises would abort the process ("terminate called without an active
exception").
"""

from __future__ import annotations

import errno
import logging
import selectors
import socket
import threading
import time
from http import HTTPStatus

from ..errors import UsageError
from .app import App
from .http import (BODY_DEADLINE_S, BOUNDARY, HEAD_END, MAX_HEAD_BYTES, STREAM, HttpError, Response,
                   error_response, parse_head)
from .logs import LOG

DEFAULT_PORT = 8080
MAX_CLIENTS = 32  # requests being answered at once, viewers included; one thread each
MAX_PENDING = 256  # connections sending their head or idle between requests; no thread each
CLIENT_TIMEOUT_S = 10.0  # a whole request head; any one read or write; an idle keep-alive connection
STREAM_SNDBUF = 256 * 1024  # per viewer: the most a stalled viewer holds in the kernel
DRAIN_S = 5.0  # at a stop: how long requests being answered may take to finish


class Pending:
    """A connection whose next request head is still arriving."""

    __slots__ = ("sock", "address", "data", "deadline")

    def __init__(self, sock: socket.socket, address, data: bytes, deadline: float):
        self.sock, self.address, self.data, self.deadline = sock, address, data, deadline


def answer_bytes(response: Response, close: bool, head_only: bool = False) -> bytes:
    """A Response as bytes on the wire. Pure."""
    lines = [f"HTTP/1.1 {response.status} {phrase(response.status)}", f"Content-Type: {response.content_type}",
             f"Content-Length: {len(response.body)}", "Cache-Control: no-store", "X-Content-Type-Options: nosniff",
             "Server: fashion-edge", *(f"{name}: {value}" for name, value in response.headers)]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else response.body)


def phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def send_quietly(sock: socket.socket, data: bytes) -> None:
    """Best effort, never blocking: an answer to a client we are about to drop."""
    try:
        sock.setblocking(False)
        sock.send(data)
        sock.shutdown(socket.SHUT_WR)
        sock.recv(65536)  # read what arrived, so closing doesn't reset the connection under the answer
    except OSError:
        pass


class Server:
    """Accepts on `address` and answers through `app`; `serve_forever` runs the head-reading loop."""

    def __init__(self, address: tuple[str, int], app: App, max_clients: int = MAX_CLIENTS,
                 client_timeout: float = CLIENT_TIMEOUT_S, log: logging.Logger = LOG,
                 max_pending: int = MAX_PENDING):
        self.app, self.max_clients, self.client_timeout, self.log = app, max_clients, client_timeout, log
        self.max_pending = max_pending
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.address_family = family
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind(address)
            self.socket.listen(64)
            self.socket.setblocking(False)
        except BaseException:
            self.socket.close()
            raise
        self.server_address = self.socket.getsockname()[:2]
        self.clients = 0  # requests being answered
        self.refused = 0  # connections answered 503: every slot busy
        self.dropped = 0  # connections that never completed a head in time, or were pushed out
        self.stopping = False
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._busy: set[socket.socket] = set()  # connections a worker has
        self._returned: list[Pending] = []  # keep-alive connections handed back by workers
        self._pending: dict[socket.socket, Pending] = {}
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.socket, selectors.EVENT_READ, "accept")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._stopped = threading.Event()
        self._busy_answer = error_response(503, f"too many clients ({max_clients}); try again in a moment",
                                           (("Retry-After", "5"),))

    # -- the head-reading loop ------------------------------------------------------------------

    def serve_forever(self, poll_interval: float = 0.25) -> None:
        try:
            while not self.stopping:
                for key, _ in self._selector.select(poll_interval):
                    if key.data == "accept":
                        self._accept()
                    elif key.data == "wake":
                        self._wake_r.recv(4096)
                    else:
                        self._read(key.data)
                self._take_returned()
                self._expire(time.monotonic())
        finally:
            self._stopped.set()

    def _accept(self) -> None:
        for _ in range(64):
            try:
                sock, address = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # out of file descriptors: stop accepting for this round
                if e.errno in (errno.EMFILE, errno.ENFILE):
                    self.log.warning(f"can't accept a connection: {e.strerror}")
                return
            if len(self._pending) >= self.max_pending:
                oldest = min(self._pending.values(), key=lambda p: p.deadline)
                self._drop(oldest)
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small JSON answers go out at once
            self._watch(Pending(sock, address, b"", time.monotonic() + self.client_timeout))

    def _watch(self, pending: Pending) -> None:
        self._pending[pending.sock] = pending
        self._selector.register(pending.sock, selectors.EVENT_READ, pending)
        if pending.data:  # a pipelined request arrived with the last one
            self._check(pending)

    def _unwatch(self, pending: Pending) -> None:
        self._pending.pop(pending.sock, None)
        try:
            self._selector.unregister(pending.sock)
        except (KeyError, ValueError):
            pass

    def _drop(self, pending: Pending, answer: bytes | None = None) -> None:
        self._unwatch(pending)
        if answer:
            send_quietly(pending.sock, answer)
        pending.sock.close()
        self.dropped += 1

    def _read(self, pending: Pending) -> None:
        try:
            chunk = pending.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._unwatch(pending)
            pending.sock.close()
            return
        pending.data += chunk
        self._check(pending)

    def _check(self, pending: Pending) -> None:
        """Hand a complete head to a worker; refuse one over the limit, complete or not."""
        end = HEAD_END.search(pending.data)
        if (end.start() if end else len(pending.data)) > MAX_HEAD_BYTES:
            status = 431 if b"\n" in pending.data[:MAX_HEAD_BYTES] else 414
            self._drop(pending, answer_bytes(error_response(
                status, f"request line and headers over {MAX_HEAD_BYTES} bytes"), close=True))
        elif end:
            self._complete(pending)

    def _expire(self, now: float) -> None:
        for pending in [p for p in self._pending.values() if p.deadline <= now]:
            # Nothing sent: an idle keep-alive connection, closed quietly. Part of a head: 408.
            self._drop(pending, answer_bytes(error_response(
                408, f"request head not complete within {self.client_timeout:g} s"), close=True)
                if pending.data.strip() else None)

    def _complete(self, pending: Pending) -> None:
        self._unwatch(pending)
        with self._lock:
            full = self.clients >= self.max_clients or self.stopping
            if full:
                self.refused += 1
            else:
                self.clients += 1
                self._busy.add(pending.sock)
        if full:
            send_quietly(pending.sock, answer_bytes(self._busy_answer, close=True))
            pending.sock.close()
            return
        try:
            threading.Thread(target=self._work, args=(pending,), name="request", daemon=True).start()
        except RuntimeError as e:  # no thread to be had: this request is refused, the loop goes on
            with self._lock:
                self.clients -= 1
                self._busy.discard(pending.sock)
                self.refused += 1
            self.log.error(f"can't start a thread for a request: {e}")
            send_quietly(pending.sock, answer_bytes(self._busy_answer, close=True))
            pending.sock.close()

    def _take_returned(self) -> None:
        with self._lock:
            returned, self._returned = self._returned, []
        for pending in returned:
            pending.sock.setblocking(False)
            self._watch(pending)

    # -- workers ----------------------------------------------------------------------------------

    def _work(self, pending: Pending) -> None:
        sock, following = pending.sock, None
        try:
            following = Exchange(self, sock, pending.address, pending.data).run()
        except Exception as e:  # a bug in this shell: the client is dropped, the log names it
            self.log.error(f"request from {pending.address[0]}: {type(e).__name__}: {e}")
        with self._lock:
            self._busy.discard(sock)
            self.clients -= 1
            keep = following is not None and not self.stopping
            if keep:  # back to the head-reading loop, with what already arrived of the next request
                self._returned.append(Pending(sock, pending.address, following,
                                              time.monotonic() + self.client_timeout))
            self._idle.notify_all()
        if keep:
            self._wake()
        else:
            sock.close()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    # -- stopping ---------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop the head-reading loop and wait for it (from another thread)."""
        self.stopping = True
        self._wake()
        self._stopped.wait(5)

    def server_close(self) -> None:
        """Close the listening socket and every connection no worker has."""
        self.stopping = True
        for pending in list(self._pending.values()):
            self._unwatch(pending)
            pending.sock.close()
        with self._lock:
            for pending in self._returned:
                pending.sock.close()
            self._returned = []
        for sock in (self.socket, self._wake_r, self._wake_w):
            try:
                self._selector.unregister(sock)
            except (KeyError, ValueError):
                pass
            sock.close()
        self._selector.close()

    def drain(self, timeout: float = DRAIN_S) -> int:
        """Let the requests being answered finish; returns how many did not within `timeout`.

        Reads end at once (a body still arriving, a keep-alive wait): answers
        can still be written. After `timeout` the connections are shut both
        ways, which ends a write blocked on a stalled client.
        """
        self.stopping = True
        with self._lock:
            for sock in self._busy:
                shut(sock, socket.SHUT_RD)
            if self._idle.wait_for(lambda: self.clients == 0, timeout):
                return 0
            for sock in self._busy:
                shut(sock, socket.SHUT_RDWR)
            self._idle.wait_for(lambda: self.clients == 0, 2.0)
            return self.clients


def shut(sock: socket.socket, how: int) -> None:
    try:
        sock.shutdown(how)
    except OSError:
        pass


class Exchange:
    """One request on a connection, in a worker thread: `run` returns the bytes already read of
    the next request when the connection stays open, else None."""

    def __init__(self, server: Server, sock: socket.socket, address, data: bytes):
        self.server, self.sock, self.address = server, sock, address
        match = HEAD_END.search(data)
        self.head, self.buffer = data[:match.start()], data[match.end():]
        self.close = True
        self.method = ""
        self.body_read = False

    def run(self) -> bytes | None:
        self.sock.setblocking(True)
        self.sock.settimeout(self.server.client_timeout)
        try:
            request = parse_head(self.head)
        except HttpError as e:
            self.send(error_response(e.status, e.message, e.headers))
            return None
        self.method = request.method
        self.close = not request.keep_alive or self.server.stopping
        app = self.server.app
        client = self.address[0] if self.address else ""
        if request.expects_continue:
            refusal = app.precheck(request.method, request.target, request.headers, client)
            if refusal is not None:
                self.close = True
                self.send(refusal)  # and the client never sends the body
                return None
            if not self.write(b"HTTP/1.1 100 Continue\r\n\r\n"):
                return None
        response = app.handle(request.method, request.target, request.headers, self.read_body, client)
        if response is STREAM:
            self.stream(app)
            return None
        has_body = request.headers.get("Content-Length", "0").strip() != "0" or "Transfer-Encoding" in request.headers
        if response.status >= 400 or (has_body and not self.body_read):
            self.close = True  # an unread body may follow: it must not be read as the next request
        self.send(response)
        return None if self.close else self.buffer

    def read_body(self, n: int) -> bytes:
        """n bytes of body within BODY_DEADLINE_S, however slowly they come; HttpError 408/400 otherwise."""
        self.body_read = True
        deadline = time.monotonic() + BODY_DEADLINE_S
        chunks, have = [self.buffer[:n]], len(self.buffer[:n])
        self.buffer = self.buffer[n:]
        try:
            while have < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise HttpError(408, f"request body not received within {BODY_DEADLINE_S:.0f} s "
                                         f"({have} of {n} bytes)")
                self.sock.settimeout(min(self.server.client_timeout, left))
                chunk = self.sock.recv(min(n - have, 65536))
                if not chunk:
                    if self.server.stopping:
                        raise HttpError(503, "the server is stopping", (("Retry-After", "10"),))
                    raise HttpError(400, f"request body ended after {have} of {n} bytes")
                chunks.append(chunk)
                have += len(chunk)
        except TimeoutError:
            raise HttpError(408, f"request body stalled after {have} of {n} bytes") from None
        except OSError:
            raise HttpError(400, f"request body ended after {have} of {n} bytes") from None
        finally:
            self.sock.settimeout(self.server.client_timeout)
        return b"".join(chunks)

    def write(self, data: bytes) -> bool:
        try:
            self.sock.sendall(data)
            return True
        except OSError:  # gone, reset, or stalled for the client timeout
            self.close = True
            return False

    def send(self, response: Response) -> None:
        self.write(answer_bytes(response, self.close, head_only=self.method == "HEAD"))

    def stream(self, app: App) -> None:
        self.close = True  # the stream is the rest of this connection
        # A small send buffer bounds what a stalled viewer holds and lets its write
        # time out sooner; the kernel would otherwise grow it to megabytes.
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_SNDBUF)
        except OSError:
            return
        head = ("HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=" + BOUNDARY +
                "\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nServer: fashion-edge\r\n"
                "Connection: close\r\n\r\n").encode()
        if self.write(head) and self.method != "HEAD":
            app.stream(self.sock.sendall)


def make_server(host: str, port: int, app: App, max_clients: int, client_timeout: float,
                log: logging.Logger = LOG) -> Server:
    """Bind, or a UsageError that says why not and what to do."""
    try:
        return Server((host, port), app, max_clients, client_timeout, log)
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
