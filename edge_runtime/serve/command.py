"""The command: argv, the token, the collect dir, the banner, the log, signals and threads.

A stop (SIGTERM, Ctrl-C, the end of the source) waits for the requests
being answered (Server.drain) and the camera loop before the process ends,
so no thread is inside OpenCV or the interpreter when Python finalises, and
removes the collect folder's temporary files, ours and any a killed run
left: `systemctl stop` ends with status 0 and no `.partial-` file.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Callable

from ..argtypes import add_own_argument, count, positive_int, positive_number
from ..deployed import default_model_path
from ..errors import UsageError
from ..own import FORGOTTEN, OwnPhotos, load_own, saving_folder
from . import logs
from .access import WILDCARD_HOSTS, is_loopback, machine_names
from .app import MAX_UPLOAD_MB, App, UploadClassifier
from .camera import CameraLoop
from .logs import LOG
from .server import CLIENT_TIMEOUT_S, DEFAULT_PORT, MAX_CLIENTS, Server, make_server
from .snapshots import Latest

TOKEN_ENV_VAR = "EDGE_SERVE_TOKEN"
# 16 characters of a random token (token_urlsafe(12), what serve generates) are
# 96 bits; 8 characters someone chose are guessable, however slow the guesses.
MIN_TOKEN_CHARS = 16
PARTIAL = re.compile(r"\..*\.partial-(\d+)")  # atomic.partial_path's temporary names


def public_source_name(spec) -> str:
    """The source as clients see it (/api/info): a file's name without its folders, a stream's
    scheme and host without user, password, path or query, a camera's number. Pure."""
    from urllib.parse import urlsplit
    if spec.kind == "file":
        return f"video file {Path(str(spec.target)).name}"
    if spec.kind == "stream":
        parts = urlsplit(str(spec.target))
        return f"stream {parts.scheme}://{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    if spec.kind == "camera":
        return f"camera {spec.target}"
    return spec.name


def remove_partials(collect_dir: Path, alive: Callable[[int], bool]) -> list[Path]:
    """Remove the temporary files a save left in collect_dir/<class>/ when its writer is gone
    (`alive(pid)` is False) or is this process; returns them. Another program's live writes stay."""
    removed = []
    for folder in [collect_dir, *(d for d in collect_dir.iterdir() if d.is_dir() and not d.is_symlink())]:
        for entry in folder.iterdir():
            match = PARTIAL.fullmatch(entry.name)
            if match and entry.is_file() and (int(match.group(1)) == os.getpid() or not alive(int(match.group(1)))):
                try:
                    entry.unlink()
                    removed.append(entry)
                except OSError:
                    pass
    return removed


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: someone else's process
        return True
    return True


def urls_to_open(host: str, port: int, token: str | None, hostname: str, addresses: list[str]) -> list[str]:
    """The addresses to print: where a browser can reach this server. Pure.

    A wildcard bind (0.0.0.0, ::) is reachable at this machine's name on the
    LAN (name.local, mDNS: Raspberry Pi OS answers it) and at its addresses.
    The token goes in the fragment (#token=): the browser keeps it, it is
    never sent in a request line or a Referer.
    """
    def url(h: str) -> str:
        h = f"[{h}]" if ":" in h and not h.startswith("[") else h
        return f"http://{h}:{port}/" + (f"#token={token}" if token else "")
    if host not in WILDCARD_HOSTS:
        return [url(host)]
    names = [hostname if "." in hostname else f"{hostname}.local"] if hostname else []
    return [url(h) for h in dict.fromkeys(names + addresses)]


def configure(parser: argparse.ArgumentParser) -> None:
    from ..frames import add_camera_arguments

    add_camera_arguments(parser, "video file (played in a loop), stream URL or camera index, instead of --camera")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on: 127.0.0.1 is this machine only; 0.0.0.0 every network "
                             "(then labelling and uploads need the token)")
    parser.add_argument("--port", type=count(0, 65535), default=DEFAULT_PORT, help="TCP port (0: any free one)")
    parser.add_argument("--collect", type=Path, default=None, metavar="DIR",
                        help="turn on the label buttons: each saves the frame's region of interest as "
                             "DIR/<class>/<time>.jpg, for python -m train --photos DIR")
    add_own_argument(parser, saves=True)
    parser.add_argument("--token", default=os.environ.get(TOKEN_ENV_VAR) or None,
                        help=f"the token labelling and uploads need, {MIN_TOKEN_CHARS} characters or more "
                             f"(default: ${TOKEN_ENV_VAR}, else one is generated when --host is not a loopback "
                             "address)")
    parser.add_argument("--allow_host", action="append", default=[], metavar="NAME",
                        help="on a LAN bind, a further name this machine is reached by (a DNS name); requests "
                             "addressed to other names need the token. Its own name, NAME.local and addresses "
                             "are always allowed")
    parser.add_argument("--max_clients", type=positive_int, default=MAX_CLIENTS,
                        help="connections at once (viewers, pages, API calls); more get 503")
    parser.add_argument("--max_upload_mb", type=positive_number, default=MAX_UPLOAD_MB,
                        help="largest image POST /api/classify accepts (413 above)")
    parser.add_argument("--client_timeout", type=positive_number, default=CLIENT_TIMEOUT_S,
                        help="seconds a client may stall a read or write before it is dropped")


def resolve_token(token: str | None, host: str) -> tuple[str | None, bool]:
    """(the token, whether it was generated). A loopback bind needs none unless one is given."""
    if token is not None:
        if len(token) < MIN_TOKEN_CHARS:
            raise UsageError(f"--token: use at least {MIN_TOKEN_CHARS} characters")
        return token, False
    if is_loopback(host):
        return None, False
    return secrets.token_urlsafe(12), True


def prepare_collect_dir(path: Path, flag: str = "--collect") -> Path:
    """Create the collect dir and check it takes files, so a bad path is an error at start, not at a click."""
    import tempfile
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as e:
        raise UsageError(f"{flag} {path}: can't write there ({e.strerror or e})") from e
    return path


def local_addresses() -> list[str]:
    """This machine's address on the LAN (the one its default route uses), if it has one."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: connecting a UDP socket sends nothing
            address = s.getsockname()[0]
        return [] if address.startswith("127.") else [address]
    except OSError:
        return []


class Service:
    """A running `serve`: the camera loop and the HTTP server, each in its thread."""

    def __init__(self, app: App, server: Server, camera: CameraLoop, token_generated: bool = False):
        self.app, self.server, self.camera, self.token_generated = app, server, camera, token_generated
        self.finished = threading.Event()  # a signal, or the camera loop ended
        self.started = time.monotonic()
        self._http = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                      name="http", daemon=True)
        self.log_handlers: list = []

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def host(self) -> str:
        return self.server.server_address[0]

    @property
    def url(self) -> str:
        """Where this machine itself reaches the server (what tests and tools use)."""
        host = self.host
        if host in WILDCARD_HOSTS:
            host = "::1" if self.server.address_family == socket.AF_INET6 else "127.0.0.1"
        return f"http://[{host}]:{self.port}/" if ":" in host else f"http://{host}:{self.port}/"

    def start(self) -> "Service":
        self.camera.start()
        self._http.start()
        return self

    def stop(self) -> None:
        """Ask everything to stop (safe from a signal handler: it only sets an event)."""
        self.finished.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self.finished.wait(timeout)

    def close(self) -> None:
        """Stop and release everything: the camera, the listening socket, the viewers; wait for the
        requests being answered; remove temporary files."""
        self.finished.set()
        self.camera.stop()
        self.app.latest.close()  # wakes the viewers; their threads end
        self.server.shutdown()
        self.server.server_close()
        unfinished = self.server.drain()
        self.camera.join()
        if unfinished:
            LOG.warning(f"{unfinished} requests still running at the stop")
        if self.app.collect_dir is not None:
            remove_partials(self.app.collect_dir, process_alive)
        for handler in self.log_handlers:
            logs.remove_handler(handler)
        self.log_handlers = []

    def banner(self, hostname: str | None = None, addresses: list[str] | None = None) -> list[str]:
        hostname = socket.gethostname() if hostname is None else hostname
        addresses = local_addresses() if addresses is None else addresses
        urls = urls_to_open(self.host, self.port, self.app.token, hostname, addresses)
        lines = [f"serving {self.app.source_name} with {self.app.model_name}"]
        if self.app.loopback:
            lines.append(f"open {urls[0]}  (this machine only; --host 0.0.0.0 to be seen from the LAN)")
        else:
            lines += ["open from another machine:"] + [f"  {u}" for u in urls]
        if self.app.token:
            lines.append(f"labelling and uploads need the token {self.app.token}"
                         + (" (generated; --token or $" + TOKEN_ENV_VAR + " to fix one)" if self.token_generated
                            else "") + "; the links above carry it")
        if self.app.own is not None:
            lines.append(f"labelled photos go to {self.app.collect_dir}/<class>/ and count as own photos at once; "
                         f"'forget' moves a class's to {self.app.collect_dir}/{FORGOTTEN}/")
        elif self.app.collect_dir is not None:
            lines.append(f"labelled photos go to {self.app.collect_dir}/<class>/ (python -m train --photos "
                         f"{self.app.collect_dir})")
        lines.append("Ctrl-C to stop")
        return lines


def start(args, opener=None, log: Callable[[str], None] | None = None) -> Service:
    """Load the model, bind the port, open the source and start both threads; errors are named and early.

    `log`: where the log's lines go while this service runs, besides the
    handlers `run` set up (tests, a program embedding serve).
    """
    from .. import capture
    from ..classifier import Classifier
    from ..frames import source_fps

    if (args.width is None) != (args.height is None):
        raise UsageError("give both --width and --height, or neither")
    token, generated = resolve_token(args.token, args.host)
    collect_arg, flag = args.collect, "--collect"
    if args.own is not None:  # the buttons save into the own-photo folder
        collect_arg, flag = saving_folder(args.own, args.collect), "--own"
    collect = prepare_collect_dir(collect_arg, flag) if collect_arg is not None else None
    if collect is not None:
        for path in remove_partials(collect, process_alive):
            LOG.info(f"removed {path.relative_to(collect)}, left by a run that was killed")
    model = args.model or default_model_path()
    classifier = Classifier(model, num_threads=args.threads, threshold=args.threshold)
    # A second interpreter for uploads: an interpreter is not thread-safe, and an
    # upload must never wait for, or hold up, the camera loop.
    uploads = UploadClassifier(Classifier(model, num_threads=args.threads, metadata=classifier.metadata,
                                          threshold=classifier.threshold), args.top_k)
    own, own_lines = None, []
    if args.own is not None:  # after the model: the photos go through it; before the first frame
        imprint = load_own(collect, classifier, say=own_lines.append)
        uploads.classifier.own = imprint
        own = OwnPhotos(collect, imprint, [classifier, uploads.classifier], uploads.embed)
    spec = capture.parse_source(args.source, args.camera, width=args.width, height=args.height, fps=args.fps)
    latest = Latest()
    loopback = is_loopback(args.host)
    app = App(labels=classifier.labels, metadata=classifier.metadata, threshold=classifier.threshold,
              latest=latest, classify_image=uploads, collect_dir=collect, token=token, loopback=loopback,
              host_names=frozenset() if loopback else machine_names(socket.gethostname(), args.allow_host),
              source_name=public_source_name(spec), model_name=Path(model).name,
              top_k=args.top_k, max_upload_bytes=int(args.max_upload_mb * 2**20), own=own)
    server = make_server(args.host, args.port, app, args.max_clients, args.client_timeout)
    try:
        stream = capture.FrameStream(spec, opener=opener, loop=not spec.live,  # opens it: CameraError names it
                                     backoff=capture.Backoff(give_up_after_s=args.reconnect_timeout),
                                     log=logs.log_line)
    except BaseException:
        server.server_close()
        raise
    service_box: list[Service] = []
    camera = CameraLoop(stream, classifier, latest, live=spec.live, roi=args.roi, roi_size=args.roi_size,
                        top_k=args.top_k, smooth=args.smooth, rate=args.rate,
                        file_fps=1.0 if spec.live else source_fps(stream),
                        on_exit=lambda: service_box and service_box[0].stop())
    app.stats = lambda: {**camera.stats(), "clients": server.clients, "clients_refused": server.refused,
                         "connections_dropped": server.dropped}
    service = Service(app, server, camera, generated)
    if log is not None:
        service.log_handlers.append(logs.to_callable(log))
    service_box.append(service)
    for line in own_lines:  # 'own photos: ...' and its warnings, in the log
        logs.log_line(line)
    return service.start()


def run(args) -> int:
    handler = logs.to_stderr()
    try:
        return serve_until_stopped(args)
    finally:
        logs.remove_handler(handler)


def serve_until_stopped(args) -> int:
    from ..process import StopFlag

    service = start(args)
    for line in service.banner():
        print(line, flush=True)  # flushed: systemd's journal and a pipe see it now
    with StopFlag(service.stop) as stop:
        try:
            while not service.wait(0.5):  # a timeout, so the main thread stays responsive to signals
                pass
        finally:
            service.close()
    camera = service.camera
    if camera.error is not None:
        raise camera.error  # a CameraError is one `error:` line and exit status 6
    elapsed = time.monotonic() - service.started
    app = service.app
    LOG.info(f"stopped ({stop.signal_name or 'end of stream'}): {camera.frames} frames in {elapsed:.1f} s "
             f"({camera.frames / elapsed if elapsed else 0:.1f} fps), {app.frames_streamed} frames streamed, "
             f"{app.saved} photos saved, {service.server.refused} clients refused")
    return 0
