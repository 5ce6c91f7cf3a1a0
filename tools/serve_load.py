"""`python -m tools.serve_load`: `serve` under load, 20 MJPEG viewers for 30 s plus one that never reads,
then hostile and busy clients (tools/serve_hostile.py).

    python -m tools.serve_load --model models/fashion_mnist_int8.tflite      # benchmarks/serve_load.{json,md}
    python -m tools.serve_load --viewers 5 --seconds 10 --out /tmp/load      # a quick look
    python -m tools.serve_load --part hostile --stops 5                      # the hostile cases alone

It starts `python -m edge_runtime serve` on 127.0.0.1 (a free port) playing a
generated 640x480 clip at 30 fps, as a camera would deliver it, and then:

1. idle (--idle_seconds): no viewer; the camera loop's rate, from /healthz's
   frame count, and the server's memory (VmRSS) and CPU;
2. load (--seconds): --viewers threads each read /stream.mjpg and count the
   frames they get; one more connection asks for the stream and never reads
   a byte; /api/latest is timed five times a second; memory sampled each
   second. The camera loop's rate again;
3. after: the viewers leave; memory at the end; the server must have dropped
   the stalled viewer, and SIGTERM must stop it with exit status 0;
4. hostile (--part hostile or all): the cases in tools/serve_hostile.py, each
   against a fresh server on 127.0.0.1, among them --stops SIGTERMs under load.

Bounded: each phase has a fixed length, every socket a timeout, and the
server is killed if it has not stopped 20 s after SIGTERM. Results are
written atomically; the Markdown file is for people, the JSON for tools. A
run of one part keeps the other part's figures from the existing JSON.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python tools/serve_load.py` works too

from edge_runtime import atomic, process  # noqa: E402
from edge_runtime.deployed import MODEL_FILENAME, MODELS_DIR  # noqa: E402
from edge_runtime.errors import ModelError, UsageError  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "serve_load"
CLIP_FPS, CLIP_FRAMES = 30.0, 60


# -- the clip ----------------------------------------------------------------------------------

def make_clip(path: Path, fps: float = CLIP_FPS, frames: int = CLIP_FRAMES) -> Path:
    """A 640x480 MJPG clip of the synthetic camera frame (a shirt on a wooden floor, sensor
    noise), panning a few pixels a frame: JPEGs the size a real camera's are, not flat test images."""
    import cv2
    import numpy as np

    from edge_runtime.synthetic import synthetic_frame
    frame = synthetic_frame()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, frame.shape[1::-1])
    if not writer.isOpened():
        raise UsageError(f"can't write {path} with OpenCV's MJPG encoder")
    for i in range(frames):
        writer.write(np.roll(frame, 4 * (i if i < frames // 2 else frames - i), axis=1))
    writer.release()
    return path


# -- the server's process -----------------------------------------------------------------------

def rss_mb(pid: int) -> float | None:
    """Resident memory of a process, MB (Linux /proc)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far, s (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def start_server(clip: Path, model: Path, extra: list[str]) -> tuple[subprocess.Popen, int]:
    """Start serve on 127.0.0.1 with any free port; (process, port) once its banner says where."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-m", "edge_runtime", "serve", str(clip), "--port", "0",
                             "--model", str(model), *extra], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("open http://"):
            port = urlsplit(line.split()[1]).port
            threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe drained
            return proc, port
    proc.kill()
    raise UsageError(f"serve did not start: {proc.stderr.read().strip()[-500:]}")


class Api:
    """Keep-alive JSON requests to the server, timed."""

    def __init__(self, port: int):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def get(self, path: str) -> tuple[int, dict, float]:
        """(status, JSON body, seconds); (0, {}, s) if it failed twice.

        Tried twice: the server closes a keep-alive connection idle for longer
        than its client timeout, and that is only seen at the next request.
        """
        for attempt in range(2):
            t = time.perf_counter()
            try:
                self.conn.request("GET", path)
                r = self.conn.getresponse()
                body = json.loads(r.read())
                return r.status, body, time.perf_counter() - t
            except (OSError, http.client.HTTPException, ValueError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        return 0, {}, time.perf_counter() - t


def wait_for_frames(api: Api, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body, _ = api.get("/healthz")
        if status == 200 and body.get("frames", 0) > 5:
            return body
        time.sleep(0.2)
    raise UsageError("serve delivered no frames within a minute")


# -- clients -------------------------------------------------------------------------------------

class Viewer(threading.Thread):
    """Reads /stream.mjpg until `stop_at`, counting whole JPEGs."""

    def __init__(self, port: int, stop_at: float):
        super().__init__(daemon=True)
        self.port, self.stop_at = port, stop_at
        self.frames, self.bytes, self.error = 0, 0, None
        self.first = self.last = None
        self.max_gap = 0.0
        self.frame_numbers_seen = 0

    def run(self) -> None:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
                s.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                f = s.makefile("rb")
                status = f.readline()
                if not status.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(f"answer {status.strip().decode(errors='replace')}")
                while f.readline() not in (b"\r\n", b""):
                    pass
                while time.monotonic() < self.stop_at:
                    line = f.readline()
                    if not line:
                        raise RuntimeError("the server closed the stream")
                    if line.startswith(b"Content-Length:"):
                        length = int(line.split(b":")[1])
                        f.readline()
                        data = f.read(length)
                        if len(data) != length or not data.startswith(b"\xff\xd8"):
                            raise RuntimeError("a part that is not a whole JPEG")
                        now = time.monotonic()
                        if self.last is not None:
                            self.max_gap = max(self.max_gap, now - self.last)
                        self.first = self.first or now
                        self.last = now
                        self.frames += 1
                        self.bytes += length
        except Exception as e:  # recorded, reported
            self.error = f"{type(e).__name__}: {e}"

    @property
    def fps(self) -> float:
        if self.frames < 2:
            return 0.0
        return (self.frames - 1) / (self.last - self.first)


def stalled_viewer(port: int) -> socket.socket:
    """Asks for the stream and never reads: the smallest receive window, so it stalls at once."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    s.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    return s


# -- the run -----------------------------------------------------------------------------------

def measure(args, previous: dict) -> dict:
    model = Path(args.model)
    if not model.is_file():
        raise ModelError(f"model {model} not found; run `make train convert` or pass --model PATH")
    import tempfile

    from tools.serve_hostile import measure_hostile
    result = dict(previous)
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_clip(Path(tmp) / "clip.avi")
        if args.part in ("all", "load"):
            proc, port = start_server(clip, model, ["--client_timeout", str(args.client_timeout),
                                                    "--max_clients", str(args.viewers + 8)])
            try:
                result.update(run_phases(proc, port, args))
            finally:
                if proc.poll() is None:
                    proc.kill()
        if args.part in ("all", "hostile"):
            result["hostile"] = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                 "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
                                 **measure_hostile(start_server, clip, model, Path(tmp), args.stops)}
    return result


def run_phases(proc: subprocess.Popen, port: int, args) -> dict:
    api = Api(port)
    wait_for_frames(api)
    time.sleep(2)  # warm-up: first frames, first allocations
    memory: list[tuple[float, float]] = []
    t0 = time.monotonic()

    def sample_memory():
        memory.append((round(time.monotonic() - t0, 1), round(rss_mb(proc.pid) or 0.0, 1)))

    # 1. idle
    sample_memory()
    _, h0, _ = api.get("/healthz")
    c0, i0 = cpu_seconds(proc.pid), time.monotonic()
    while time.monotonic() - i0 < args.idle_seconds:
        time.sleep(1)
        sample_memory()
    _, h1, _ = api.get("/healthz")
    idle_elapsed = time.monotonic() - i0
    idle = {"seconds": round(idle_elapsed, 1), "loop_fps": round((h1["frames"] - h0["frames"]) / idle_elapsed, 2),
            "server_cpu_percent": round(100 * (cpu_seconds(proc.pid) - c0) / idle_elapsed, 1)}
    memory_start = memory[0][1]

    # 2. load
    stalled = stalled_viewer(port)
    started = time.monotonic()
    stop_at = started + args.seconds
    viewers = [Viewer(port, stop_at) for _ in range(args.viewers)]
    for v in viewers:
        v.start()
    latencies, viewer_counts, stalled_dropped_at = [], [], None
    _, h2, _ = api.get("/healthz")
    c2 = cpu_seconds(proc.pid)
    next_sample = time.monotonic() + 1
    while time.monotonic() < stop_at:
        status, body, seconds = api.get("/api/latest")
        if status == 200:
            latencies.append(seconds * 1000)
        _, health, _ = api.get("/healthz")
        count = health.get("viewers")
        viewer_counts.append(count)
        if stalled_dropped_at is None and count is not None and max(viewer_counts) == args.viewers + 1 \
                and count <= args.viewers:
            stalled_dropped_at = time.monotonic() - started
        if time.monotonic() >= next_sample:
            sample_memory()
            next_sample += 1
        time.sleep(0.2)
    _, h3, _ = api.get("/healthz")
    load_elapsed = time.monotonic() - started
    load_cpu = cpu_seconds(proc.pid) - c2
    for v in viewers:
        v.join(15)

    # 3. after
    stalled.close()
    time.sleep(3)
    _, h4, _ = api.get("/healthz")
    sample_memory()
    memory_end = memory[-1][1]
    api.conn.close()
    t_stop = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=20)
        exit_code = proc.returncode
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        exit_code = None
    stop_seconds = time.monotonic() - t_stop

    rates = [round(v.fps, 2) for v in viewers]
    load = {
        "seconds": round(load_elapsed, 1), "viewers": args.viewers,
        "loop_fps": round((h3["frames"] - h2["frames"]) / load_elapsed, 2),
        "server_cpu_percent": round(100 * load_cpu / load_elapsed, 1),
        "viewer_fps": rates,
        "viewer_fps_min": min(rates), "viewer_fps_median": round(statistics.median(rates), 2),
        "viewer_fps_max": max(rates),
        "viewer_max_gap_s": round(max(v.max_gap for v in viewers), 3),
        "viewer_errors": [v.error for v in viewers if v.error],
        "megabytes_per_s_to_viewers": round(sum(v.bytes for v in viewers) / load_elapsed / 1e6, 1),
        "mean_jpeg_kb": round(sum(v.bytes for v in viewers) / max(1, sum(v.frames for v in viewers)) / 1024, 1),
        "api_latest_ms_median": round(statistics.median(latencies), 2) if latencies else None,
        "api_latest_ms_max": round(max(latencies), 2) if latencies else None,
        "api_latest_requests": len(latencies),
        "stalled_viewer_dropped_after_s": None if stalled_dropped_at is None else round(stalled_dropped_at, 1),
        "camera_frames_dropped": h3.get("camera_frames_dropped"),
    }
    return {
        "schema": "fashion-edge-serve-load/1",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_at_start": [round(x, 2) for x in args.load_at_start]},
        "settings": {"model": model_summary(Path(args.model)),
                     "clip": f"640x480 MJPG, {CLIP_FPS:g} fps, synthetic frame panning",
                     "viewers": args.viewers, "seconds": args.seconds, "idle_seconds": args.idle_seconds,
                     "client_timeout_s": args.client_timeout},
        "idle": idle, "load": load,
        "after": {"viewers_left": h4.get("viewers"), "clients_refused": h4.get("clients_refused")},
        "memory_mb": {"start": memory_start, "peak": max(m for _, m in memory), "end": memory_end,
                      "samples": memory},
        "stop": {"signal": "SIGTERM", "exit_code": exit_code, "seconds": round(stop_seconds, 2),
                 "message": next((l for l in err.splitlines() if l.startswith("stopped")), err.strip()[-300:])},
    }


def model_summary(path: Path) -> dict:
    from edge_runtime.metadata import read_metadata, sha256
    meta = read_metadata(path)
    shown = path.resolve().relative_to(ROOT).as_posix() if path.resolve().is_relative_to(ROOT) else str(path)
    return {"path": shown, "sha256": sha256(path.read_bytes()), "variant": meta.get("variant"),
            "training_run": (meta.get("training") or {}).get("run"),
            "model": ((meta.get("training") or {}).get("config") or {}).get("model"),
            "accuracy": (meta.get("accuracy") or {}).get("accuracy")}


def markdown(r: dict) -> str:
    from tools.serve_hostile import markdown as hostile_markdown
    parts = ((load_markdown(r) if "load" in r else [])
             + (hostile_markdown(r["hostile"], r.get("hostile_before")) if "hostile" in r else []))
    return "\n".join(parts)


def load_markdown(r: dict) -> list[str]:
    idle, load, mem, stop = r["idle"], r["load"], r["memory_mb"], r["stop"]
    dropped = load["stalled_viewer_dropped_after_s"]
    s = r["settings"]
    lines = [
        "# `serve` under load",
        "",
        f"Regenerated by `python -m tools.serve_load` (the deployed model; `--model PATH` for another). "
        f"This run: {r['created']}, {r['machine']['platform']}, {r['machine']['cpus']} CPUs, "
        f"load average {r['machine']['load_average_at_start'][0]} at the start "
        "(other work on the machine competes with the server and the 20 clients alike).",
        "",
        f"`serve` on 127.0.0.1 plays a {s['clip']} clip, as a camera delivers frames. "
        f"{s['viewers']} viewers read `/stream.mjpg` for {s['seconds']:g} s while one more connection asks "
        f"for the stream and never reads; `/api/latest` is asked five times a second meanwhile. Model: "
        f"{Path(s['model']['path']).name}, {s['model']['variant']} `{s['model']['model']}` from run "
        f"`{s['model']['training_run']}` (sha256 {s['model']['sha256'][:12]}).",
        "",
        "| | result |",
        "|---|---:|",
        f"| camera loop, no viewer | {idle['loop_fps']:.1f} fps |",
        f"| camera loop, {load['viewers']} viewers + 1 stalled | {load['loop_fps']:.1f} fps |",
        f"| each viewer: min / median / max | {load['viewer_fps_min']:.1f} / {load['viewer_fps_median']:.1f} / "
        f"{load['viewer_fps_max']:.1f} fps |",
        f"| longest wait for a frame, any viewer | {load['viewer_max_gap_s'] * 1000:.0f} ms |",
        f"| sent to viewers | {load['megabytes_per_s_to_viewers']:.1f} MB/s ({load['mean_jpeg_kb']:.0f} KB a frame) |",
        "| stalled viewer | " + (f"dropped after {dropped:.1f} s (client timeout {s['client_timeout_s']:g} s)"
                                  if dropped is not None else "**not dropped**") + " |",
        f"| `/api/latest` under load: median / max | {load['api_latest_ms_median']:.1f} / "
        f"{load['api_latest_ms_max']:.1f} ms ({load['api_latest_requests']} requests) |",
        f"| server memory (VmRSS): start / peak / end | {mem['start']:.0f} / {mem['peak']:.0f} / {mem['end']:.0f} MB |",
        f"| server CPU, idle / under load | {idle['server_cpu_percent']:.0f}% / {load['server_cpu_percent']:.0f}% "
        "of one core |",
        f"| SIGTERM | exit status {stop['exit_code']} after {stop['seconds']:.1f} s |",
        "",
        f"Viewer errors: {len(load['viewer_errors'])}" + (f" ({'; '.join(load['viewer_errors'][:3])})"
                                                          if load["viewer_errors"] else "") + ".",
        f"After the viewers left: {r['after']['viewers_left']} viewers connected, "
        f"{r['after']['clients_refused']} clients refused. The server's own summary: `{stop['message']}`.",
        "",
        "Each viewer's frame rate, fps:",
        "",
        "| " + " | ".join(str(i + 1) for i in range(len(load["viewer_fps"]))) + " |",
        "|" + "---:|" * len(load["viewer_fps"]),
        "| " + " | ".join(f"{x:.1f}" for x in load["viewer_fps"]) + " |",
        "",
        "Memory each second (s, MB): " + ", ".join(f"{t:g} {m:.0f}" for t, m in mem["samples"]) + ".",
        "",
    ]
    return lines


@process.command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.serve_load", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / MODELS_DIR / MODEL_FILENAME, help="the .tflite model")
    parser.add_argument("--viewers", type=int, default=20, help="MJPEG viewers that read")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long they read")
    parser.add_argument("--idle_seconds", type=float, default=10.0, help="the camera loop alone, before them")
    parser.add_argument("--client_timeout", type=float, default=10.0, help="serve's --client_timeout")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="writes OUT.json and OUT.md")
    parser.add_argument("--part", choices=("all", "load", "hostile"), default="all",
                        help="the viewers' load, the hostile cases, or both; a part not run keeps its figures")
    parser.add_argument("--stops", type=int, default=20, help="SIGTERMs under load in the hostile part")
    args = parser.parse_args(argv)
    if not (1 <= args.viewers <= 200 and 1 <= args.seconds <= 600 and 1 <= args.idle_seconds <= 600
            and 1 <= args.stops <= 100):
        raise UsageError("--viewers 1..200, --seconds and --idle_seconds 1..600, --stops 1..100")
    args.load_at_start = os.getloadavg()
    previous_path = args.out.with_suffix(".json")
    previous = json.loads(previous_path.read_text()) if previous_path.is_file() else {}
    if args.part == "all":  # a fresh record, but figures measured against an older server stay
        previous = {k: v for k, v in previous.items() if k == "hostile_before"}
    result = measure(args, previous)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(args.out.with_suffix(".json"), json.dumps(result, indent=2) + "\n")
    atomic.write_text(args.out.with_suffix(".md"), markdown(result))
    print(markdown(result))
    print(f"wrote {args.out.with_suffix('.md')} and .json")
    return 0


if __name__ == "__main__":
    process.exit_with(main())
