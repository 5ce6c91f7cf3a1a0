"""`python -m edge_runtime serve`: the camera and its classification in a browser, and a JSON API.

    python -m edge_runtime serve                           # http://127.0.0.1:8080/, this machine only
    python -m edge_runtime serve --host 0.0.0.0 --collect photos/   # the LAN; labelling needs the printed token
    python -m edge_runtime serve clip.mp4 --port 0         # a video file, in a loop; any free port
    python -m edge_runtime serve --own my-photos/          # own photos mixed in; the buttons add to them

    GET  /                 the page: live video, region of interest, top-k, model input, fps, label buttons
    GET  /stream.mjpg      the camera as multipart/x-mixed-replace JPEG frames
    GET  /frame.jpg        the latest frame;   GET /input.png: the 28x28 input the model saw
    GET  /api/latest       the latest prediction (classify --json's fields, frame number, time);
                           ?after=N waits up to 2 s for a frame newer than N
    GET  /api/info         labels, model metadata, source, whether labelling is on, photos per class
                           saved ("counts") and own photos per class ("own", with --own)
    POST /api/classify     an image in the body -> what `classify --json` says of that file
    POST /api/label        {"label": "Sneaker"}: save the current frame's region of interest
                           as <collect dir>/Sneaker/<time>.jpg, the layout `train --photos` reads;
                           with --own DIR it is saved in DIR and added to the own photos at once
    POST /api/forget       {"label": "Sneaker"}: with --own, drop that class's own photos; its
                           folder moves to DIR/.forgotten/<time>/Sneaker/
    GET  /healthz          200 while frames arrive, 503 when the camera stalled

The package, pure parts first: `http` (answers as values, body limits),
`access` (Host, Origin, token), `snapshots` (the latest frame and its
readers), `app` (`App` answers a request without touching a socket and is
what the tests call), `camera` (the loop that classifies frames in a
thread), `server` (the socket shell), `command` (argv, signals, threads),
`page` (the HTML).

Why the standard library's ThreadingHTTPServer: one thread per connection
is what an MJPEG stream wants (each viewer blocks in its own send), the
client limit bounds the threads, and the device needs no new package
(picamera2's own mjpeg_server.py example does the same).
"""

from __future__ import annotations

from .access import WILDCARD_HOSTS, Limiter, check_token, host_allowed, host_name, is_loopback, machine_names, same_origin
from .app import App, UploadClassifier, parse_after, parse_label, photo_count
from .camera import CameraLoop, next_due
from .command import (MIN_TOKEN_CHARS, TOKEN_ENV_VAR, Service, configure, local_addresses, prepare_collect_dir,
                      public_source_name, remove_partials, resolve_token, run, start, urls_to_open)
from .http import STREAM, HttpError, Request, Response, body_length, error_response, json_response, parse_head, part_header
from .server import DEFAULT_PORT, Server, make_server
from .snapshots import Latest, Snapshot
from ..errors import UsageError

__all__ = ["App", "CameraLoop", "DEFAULT_PORT", "HttpError", "Latest", "Limiter", "MIN_TOKEN_CHARS", "Request",
           "Response", "STREAM", "Server", "Service", "Snapshot", "TOKEN_ENV_VAR", "UploadClassifier", "UsageError",
           "WILDCARD_HOSTS", "body_length", "check_token", "configure", "error_response", "host_allowed", "host_name",
           "is_loopback", "json_response", "local_addresses", "machine_names", "make_server", "next_due",
           "parse_after", "parse_head", "parse_label", "part_header", "photo_count", "prepare_collect_dir",
           "public_source_name", "remove_partials", "resolve_token", "run", "same_origin", "start", "urls_to_open"]
