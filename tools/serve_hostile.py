"""`python -m tools.serve_load --part hostile`: `serve` used the way a hostile or just busy LAN would.

Each case runs against `python -m edge_runtime serve` on 127.0.0.1 (never
another address), is bounded in time, and records what every client got:

- log: uploads of a damaged JPEG (libjpeg warns) from two clients at once
  while a third labels; no response may carry another request's line, the
  server's stderr must still be its own (fd 2 not a deleted file), and every
  save must reach the log, one line each;
- bomb: a 380 KB 16-bit RGBA 7000x7000 PNG; the server's peak memory above
  idle (VmHWM after resetting it through /proc/PID/clear_refs);
- slow heads: 40 connections sending a header byte every 5 s while /api/latest
  is asked 3 times a second: how many of those are answered;
- slow uploads: 2 uploads trickling in at 2 KB/s while 10 others are sent whole;
- label flood: one client labelling as fast as it can for 3 s;
- parsing: malformed heads and bodies, each answered with a status;
- wrong tokens: 300 tries as fast as possible against --token;
- stops: SIGTERM under uploads, labels and a viewer, --stops times; the exit
  statuses and any `.partial-` file left in the collect folder.

The camera loop's rate is read from /healthz around the slow-heads and
slow-uploads cases. Results go into the JSON under "hostile".
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from edge_runtime.errors import UsageError

TOKEN = "hostile-run-token-0123456789"


def raw(port: int, request: bytes, timeout: float = 15) -> tuple[int, str]:
    """Send bytes, read one answer: (status, error text or ''); (0, why) when there was none."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(request)
            r = http.client.HTTPResponse(s)
            r.begin()
            body = r.read()
            try:
                return r.status, str(json.loads(body).get("error", ""))[:160]
            except (ValueError, AttributeError):
                return r.status, ""
    except (OSError, http.client.HTTPException) as e:
        return 0, f"{type(e).__name__}"


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
            timeout: float = 30) -> tuple[int, dict, float]:
    """(status, JSON body, seconds); (0, {"error": why}, s) when the connection failed."""
    t = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        try:
            parsed = json.loads(data)
        except ValueError:
            parsed = {}
        return r.status, parsed if isinstance(parsed, dict) else {}, time.perf_counter() - t
    except (OSError, http.client.HTTPException) as e:
        return 0, {"error": type(e).__name__}, time.perf_counter() - t
    finally:
        conn.close()


def statuses(results) -> dict[str, int]:
    counts: dict[str, int] = {}
    for status in results:
        counts[str(status)] = counts.get(str(status), 0) + 1
    return dict(sorted(counts.items()))


def loop_fps(port: int, seconds: float, work) -> tuple[float, object]:
    """Run work() and return (the camera loop's frames per second meanwhile, work's result)."""
    _, h0, _ = request(port, "GET", "/healthz")
    t = time.monotonic()
    result = work()
    elapsed = time.monotonic() - t
    _, h1, _ = request(port, "GET", "/healthz")
    return round((h1.get("frames", 0) - h0.get("frames", 0)) / max(elapsed, 1e-6), 1), result


# -- images -------------------------------------------------------------------------------------

def damaged_jpeg() -> bytes:
    """A camera-sized JPEG whose data meets an end marker two thirds through: it decodes, libjpeg warns."""
    import cv2

    from edge_runtime.synthetic import synthetic_frame
    data = bytearray(cv2.imencode(".jpg", synthetic_frame())[1].tobytes())
    at = len(data) * 2 // 3
    data[at:at + 2] = b"\xff\xd9"
    return bytes(data)


def png_bomb(side: int = 7000) -> bytes:
    """A 16-bit RGBA PNG, `side` px square, almost all zeros: a few hundred KB that decode to 8 bytes a pixel."""
    import cv2
    import numpy as np
    image = np.zeros((side, side, 4), np.uint16)
    image[::97, ::89] = 65535
    return cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 9])[1].tobytes()


def largest_accepted_png(side: int = 4900) -> bytes:
    """An 8-bit RGBA PNG of smooth gradients just under serve's decoding budget (2 x 92 MB of 200)."""
    import cv2
    import numpy as np
    ramp = np.linspace(0, 255, side, dtype=np.float32)
    mix = np.add.outer(ramp, ramp) / 2
    image = np.dstack([mix, mix[::-1], np.tile(ramp, (side, 1)), mix]).astype(np.uint8)
    return cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 9])[1].tobytes()


def good_jpeg() -> bytes:
    import cv2

    from edge_runtime.synthetic import synthetic_frame
    return cv2.imencode(".jpg", synthetic_frame())[1].tobytes()


# -- the server ---------------------------------------------------------------------------------

class Server:
    """One `serve` process with its stderr collected line by line."""

    def __init__(self, start_server, clip: Path, model: Path, extra: list[str]):
        self.proc, self.port = start_server(clip, model, extra)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.stderr_target = stderr_target(self.proc.pid)

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def stop(self, timeout: float = 20) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None
        finally:
            self._reader.join(5)
        return self.proc.returncode


def stderr_target(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/fd/2")
    except OSError:
        return "?"


def status_kb(pid: int, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux 4.0+: clear_refs 5)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# -- the cases ----------------------------------------------------------------------------------

def case_log(server: Server, uploads_per_client: int = 30, labels: int = 40) -> dict:
    damaged = damaged_jpeg()
    responses: list[dict] = []
    saved: list[str] = []

    def uploader():
        for _ in range(uploads_per_client):
            status, body, _ = request(server.port, "POST", "/api/classify", damaged, {"Content-Type": "image/jpeg"})
            responses.append({"status": status, "warnings": body.get("warnings", [])})

    def labeller():
        for i in range(labels):
            status, body, _ = request(server.port, "POST", "/api/label", json.dumps({"label": "Bag"}).encode(),
                                      {"Content-Type": "application/json"})
            if status == 200:
                saved.append(body["saved"])
            time.sleep(0.05)

    threads = [threading.Thread(target=uploader) for _ in range(2)] + [threading.Thread(target=labeller)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    time.sleep(0.5)
    foreign = [w for r in responses for w in r["warnings"] if not w.startswith("upload: ")]
    logged = [s for s in saved if any(s in line for line in server.lines)]
    return {"uploads": len(responses), "upload_statuses": statuses(r["status"] for r in responses),
            "uploads_with_decoder_warning": sum(1 for r in responses if r["warnings"]),
            "foreign_warnings": len(foreign), "foreign_example": foreign[0] if foreign else None,
            "labels_saved": len(saved), "saves_in_log": len(logged),
            "stderr_before": server.stderr_target, "stderr_after": stderr_target(server.proc.pid)}


def case_bomb(server: Server) -> dict:
    bomb = png_bomb()
    time.sleep(1)
    idle = status_kb(server.proc.pid, "VmRSS") or 0
    reset = reset_peak(server.proc.pid)
    status, body, seconds = request(server.port, "POST", "/api/classify", bomb, {"Content-Type": "image/png"},
                                    timeout=120)
    peak = status_kb(server.proc.pid, "VmHWM") or 0
    largest = largest_accepted_png()
    idle2 = status_kb(server.proc.pid, "VmRSS") or 0
    reset_peak(server.proc.pid)
    status2, _, seconds2 = request(server.port, "POST", "/api/classify", largest, {"Content-Type": "image/png"},
                                   timeout=120)
    peak2 = status_kb(server.proc.pid, "VmHWM") or 0
    return {"bytes": len(bomb), "image": "7000x7000 16-bit RGBA PNG", "status": status,
            "error": body.get("error"), "seconds": round(seconds, 2), "idle_mb": round(idle / 1024),
            "peak_above_idle_mb": round((peak - idle) / 1024) if reset else None,
            "largest_accepted": {"image": "4900x4900 8-bit RGBA PNG", "bytes": len(largest), "status": status2,
                                 "seconds": round(seconds2, 2),
                                 "peak_above_idle_mb": round((peak2 - idle2) / 1024) if reset else None}}


def case_slow_heads(server: Server, connections: int = 40, seconds: float = 20.0, interval: float = 5.0) -> dict:
    stop = time.monotonic() + seconds
    held, done = [], threading.Event()

    def trickle():
        try:
            s = socket.create_connection(("127.0.0.1", server.port), timeout=seconds + 10)
        except OSError:
            return
        held.append(s)
        head = b"GET /api/latest HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200
        for byte in head:
            if done.wait(interval):
                break
            try:
                s.sendall(bytes([byte]))
            except OSError:
                break

    def real_requests():
        results = []
        time.sleep(2)  # the slow connections are in
        while time.monotonic() < stop and len(results) < 60:
            status, _, _ = request(server.port, "GET", "/api/latest", timeout=10)
            results.append(status)
            time.sleep(max(0.0, 1 / 3))
        return results

    threads = [threading.Thread(target=trickle, daemon=True) for _ in range(connections)]
    for t in threads:
        t.start()
    fps, results = loop_fps(server.port, seconds, real_requests)
    done.set()
    for s in held:
        s.close()
    return {"slow_connections": connections, "byte_every_s": interval, "requests": len(results),
            "statuses": statuses(results), "answered_200": results.count(200), "loop_fps": fps}


def case_slow_uploads(server: Server, slow: int = 2, good: int = 10) -> dict:
    length = 200_000
    done = threading.Event()

    def trickle():
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=60) as s:
                s.sendall(b"POST /api/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
                          b"Content-Length: %d\r\n\r\n" % length)
                while not done.wait(0.5):
                    s.sendall(b"\0" * 1000)  # 2 KB/s
        except OSError:
            pass

    def good_uploads():
        jpeg = good_jpeg()
        time.sleep(1)
        return [request(server.port, "POST", "/api/classify", jpeg, {"Content-Type": "image/jpeg"})
                for _ in range(good)]

    threads = [threading.Thread(target=trickle, daemon=True) for _ in range(slow)]
    for t in threads:
        t.start()
    fps, results = loop_fps(server.port, 0, good_uploads)
    done.set()
    times = [s for _, _, s in results]
    return {"slow_uploads": slow, "good_uploads": good, "statuses": statuses(st for st, _, _ in results),
            "slowest_good_s": round(max(times), 2), "loop_fps": fps}


def case_label_flood(server: Server, collect: Path, seconds: float = 3.0) -> dict:
    before = set(collect.rglob("*.jpg"))
    results = []
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    lines_before = len(server.lines)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            conn.request("POST", "/api/label", body=b'{"label": "Bag"}', headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            results.append(r.status)
            if r.getheader("Connection", "").lower() == "close":
                conn.close()
        except (OSError, http.client.HTTPException):
            conn.close()
            results.append(0)
    conn.close()
    time.sleep(0.3)
    about = [line for line in server.lines if "labels a second" in line]  # one a minute per client, the first
    return {"seconds": seconds, "requests": len(results), "statuses": statuses(results),  # maybe in case_log
            "saved_per_s": round(results.count(200) / seconds, 1),
            "files_written": len(set(collect.rglob("*.jpg")) - before),
            "log_lines_about_the_limit": len(about), "example_log_line": about[0] if about else None,
            "log_lines_during_the_flood": len(server.lines) - lines_before}


PARSING = {
    "Content-Length: ² (a Unicode digit)":
        "POST /api/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: ²\r\n\r\n".encode("latin-1"),
    "Content-Length: ² with Expect: 100-continue":
        "POST /api/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: ²\r\nExpect: 100-continue\r\n\r\n".encode("latin-1"),
    "two different Content-Lengths":
        b"POST /api/label HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 16\r\nContent-Length: 3\r\n\r\n{\"label\": \"Bag\"}",
    "Content-Length and Transfer-Encoding":
        b"POST /api/label HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 16\r\nTransfer-Encoding: chunked\r\n\r\n{\"label\": \"Bag\"}",
    "label JSON nested 2,000 deep":
        b"POST /api/label HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n"
        + b"[" * 2000 + b"]" * 2000,
    "a header line without a colon":
        b"GET /api/latest HTTP/1.1\r\nHost: 127.0.0.1\r\nno colon here\r\n\r\n",
    "a header folded onto the next line":
        b"GET /api/latest HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: 1\r\n folded\r\n\r\n",
    "two Host headers":
        b"GET /api/latest HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n\r\n",
    "HTTP/2.0 in the request line":
        b"GET /api/latest HTTP/2.0\r\nHost: 127.0.0.1\r\n\r\n",
    "a NUL in the path":
        b"GET /api/latest\0 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
}


def case_parsing(server: Server) -> dict:
    return {name: dict(zip(("status", "error"), raw(server.port, data))) for name, data in PARSING.items()}


def case_tokens(server: Server, tries: int = 300) -> dict:
    results = []
    t = time.perf_counter()
    for i in range(tries):
        status, _, _ = request(server.port, "POST", "/api/label", b'{"label": "Bag"}',
                               {"Content-Type": "application/json", "Authorization": f"Bearer guess-{i:016d}"})
        results.append(status)
    elapsed = time.perf_counter() - t
    status, _, _ = request(server.port, "POST", "/api/label", b'{"label": "Bag"}',
                           {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})
    return {"tries": tries, "seconds": round(elapsed, 2), "statuses": statuses(results),
            "wrong_tokens_compared_per_s": round(results.count(403) / elapsed, 1),
            "right_token_afterwards_from_the_same_address": status}


def case_stops(start_server, clip: Path, model: Path, rounds: int, tmp: Path) -> dict:
    damaged, jpeg = damaged_jpeg(), good_jpeg()
    codes, partial_files, summaries, seconds = [], 0, 0, []
    for i in range(rounds):
        collect = tmp / f"stops-{i}"
        server = Server(start_server, clip, model, ["--collect", str(collect)])
        stop = threading.Event()

        def uploader(body):
            while not stop.is_set():
                request(server.port, "POST", "/api/classify", body, {"Content-Type": "image/jpeg"}, timeout=20)

        def labeller():
            while not stop.is_set():
                request(server.port, "POST", "/api/label", b'{"label": "Bag"}', {"Content-Type": "application/json"},
                        timeout=20)

        def viewer():
            try:
                with socket.create_connection(("127.0.0.1", server.port), timeout=20) as s:
                    s.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                    while not stop.is_set() and s.recv(65536):
                        pass
            except OSError:
                pass

        threads = ([threading.Thread(target=uploader, args=(b,), daemon=True) for b in (damaged, jpeg)]
                   + [threading.Thread(target=labeller, daemon=True) for _ in range(4)]
                   + [threading.Thread(target=viewer, daemon=True)])
        for t in threads:
            t.start()
        time.sleep(1.5)
        t = time.monotonic()
        codes.append(server.stop())
        seconds.append(time.monotonic() - t)
        stop.set()
        for th in threads:
            th.join(30)
        partial_files += sum(1 for p in collect.rglob("*") if ".partial-" in p.name)
        summaries += any(line.startswith("stopped (SIGTERM)") or "stopped (SIGTERM)" in line for line in server.lines)
    return {"rounds": rounds, "exit_statuses": statuses("killed" if c is None else c for c in codes),
            "exit_0": codes.count(0), "partial_files_left": partial_files, "summary_line_logged": summaries,
            "slowest_stop_s": round(max(seconds), 2)}


def case_decode_lock(decodes: int = 40) -> dict:
    """What serialising decodes costs (edge_runtime.native_stderr.LOCK): ms a decode of a 4000x3000 JPEG
    (at 1/8, as uploads are) from 1 thread, from 2 with the lock, and from 2 with it swapped for a no-op
    (unsafe: only to measure), in this process."""
    import cv2

    from edge_runtime import imageio, native_stderr
    from edge_runtime.photo import WORK_SIDE
    from edge_runtime.synthetic import synthetic_frame
    data = cv2.imencode(".jpg", cv2.resize(synthetic_frame(), (4000, 3000)))[1].tobytes()

    def per_decode(threads: int, n: int = decodes) -> float:
        def work():
            for _ in range(n):
                imageio.decode(data, "upload", warn=lambda line: None, working_side=WORK_SIDE)
        workers = [threading.Thread(target=work) for _ in range(threads)]
        t = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return round((time.perf_counter() - t) / (n * threads) * 1000, 2)

    class NoLock:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    per_decode(1, 5)  # warm-up
    one, locked = per_decode(1), per_decode(2)
    real, native_stderr.LOCK = native_stderr.LOCK, NoLock()
    try:
        unlocked = per_decode(2)
    finally:
        native_stderr.LOCK = real
    return {"image": "4000x3000 JPEG, decoded at 1/8", "ms_one_thread": one, "ms_two_threads_locked": locked,
            "ms_two_threads_unlocked": unlocked, "load_average": round(os.getloadavg()[0], 2)}


def measure_hostile(start_server, clip: Path, model: Path, tmp: Path, stops: int = 20) -> dict:
    """Every case above; returns the figures for the JSON's "hostile" part."""
    results: dict = {}
    collect = tmp / "collect"
    server = Server(start_server, clip, model, ["--collect", str(collect)])
    try:
        wait_frames(server.port)
        results["log"] = case_log(server)
        results["bomb"] = case_bomb(server)
        results["slow_heads"] = case_slow_heads(server)
        results["slow_uploads"] = case_slow_uploads(server)
        results["label_flood"] = case_label_flood(server, collect)
        results["parsing"] = case_parsing(server)
        results["stop_after_cases"] = server.stop()
        results["stderr_after_cases_ends_with"] = server.lines[-1][:200] if server.lines else None
    finally:
        server.stop()
    server = Server(start_server, clip, model, ["--token", TOKEN])
    try:
        wait_frames(server.port)
        results["tokens"] = case_tokens(server)
    finally:
        server.stop()
    results["stops"] = case_stops(start_server, clip, model, stops, tmp)
    results["decode_lock"] = case_decode_lock()
    return results


def wait_frames(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body, _ = request(port, "GET", "/healthz", timeout=5)
        if status == 200 and body.get("frames", 0) > 5:
            return
        time.sleep(0.2)
    raise UsageError("serve delivered no frames within a minute")


def rows(h: dict) -> dict[str, str]:
    """{case: what happened} for the Markdown table."""
    log, bomb, heads, ups = h["log"], h["bomb"], h["slow_heads"], h["slow_uploads"]
    flood, tokens, stops = h["label_flood"], h["tokens"], h["stops"]
    return {
        f"{log['uploads']} uploads of a damaged JPEG from 2 clients while a third labels":
            f"{log['foreign_warnings']} foreign lines in responses' warnings; {log['saves_in_log']} of "
            f"{log['labels_saved']} saves in the log; stderr "
            + ("unchanged" if log["stderr_after"] == log["stderr_before"] else f"now `{log['stderr_after']}`"),
        f"{bomb['image']}, {bomb['bytes'] / 1024:.0f} KB":
            f"{bomb['status']} in {bomb['seconds']:.1f} s, peak {bomb['peak_above_idle_mb']} MB above idle",
        **({f"the largest image accepted: {big['image']}, {big['bytes'] / 1024:.0f} KB":
            f"{big['status']} in {big['seconds']:.1f} s, peak {big['peak_above_idle_mb']} MB above idle"}
           if (big := bomb.get("largest_accepted")) else {}),
        f"{heads['slow_connections']} connections sending a header byte every {heads['byte_every_s']:g} s; "
        "real `/api/latest` meanwhile":
            f"{heads['answered_200']} of {heads['requests']} answered 200 {heads['statuses']}",
        f"{ups['slow_uploads']} uploads trickling at 2 KB/s, {ups['good_uploads']} whole ones meanwhile":
            f"{ups['statuses']}, slowest {ups['slowest_good_s']:.2f} s",
        f"one client labelling as fast as it can for {flood['seconds']:g} s":
            f"{flood['statuses']}: {flood['files_written']} files ({flood['saved_per_s']:g}/s); "
            f"{flood['log_lines_about_the_limit']} log lines about the limit"
            + (f" (`{flood['example_log_line']}`)" if flood.get("example_log_line") else ""),
        f"{tokens['tries']} wrong tokens as fast as possible, then the right one":
            f"{tokens['statuses']} in {tokens['seconds']:.1f} s; the right one from the same address: "
            f"{tokens['right_token_afterwards_from_the_same_address']}",
        f"SIGTERM under 2 uploaders, 4 labellers and a viewer, {stops['rounds']} times":
            f"exit statuses {stops['exit_statuses']}; {stops['partial_files_left']} partial files left; "
            f"summary logged {stops['summary_line_logged']} times",
    }


def markdown(h: dict, before: dict | None = None) -> list[str]:
    """The hostile part of benchmarks/serve_load.md; `before`: the same cases against an older server."""
    now = rows(h)
    old = rows(before) if before else None
    lines = [
        "## Hostile and busy clients",
        "",
        "`python -m tools.serve_load --part hostile`: each case against `serve` on 127.0.0.1 with `--collect`, "
        "bounded in time (tools/serve_hostile.py says how each is made). "
        f"This run: {h['created']}, load average {h['load_average_at_start'][0]} at the start. Camera loop "
        f"meanwhile: {h['slow_heads']['loop_fps']:.1f} fps during the slow heads, "
        f"{h['slow_uploads']['loop_fps']:.1f} fps during the slow uploads.",
        "",
    ]
    if old:
        lines += [f"Before: {before['server']}, the same cases (`--stops {before['stops']['rounds']}`).", "",
                  "| case | before | now |", "|---|---|---|"]
        was = dict(zip([k.split(",")[0].split(" times")[0][:40] for k in old], old.values()))
        lines += [f"| {case} | {was.get(case.split(',')[0].split(' times')[0][:40], 'not measured')} | {result} |"
                  for case, result in now.items()]
    else:
        lines += ["| case | result |", "|---|---|"] + [f"| {case} | {result} |" for case, result in now.items()]
    lines += ["", "Malformed requests:", "", "| request | " + ("before | " if before else "") + "status | error |",
              "|---|" + ("---:|" if before else "") + "---:|---|"]
    for name, answer in h["parsing"].items():
        was = f"{before['parsing'].get(name, {}).get('status', '')} | " if before else ""
        lines.append(f"| {name} | {was}{answer['status']} | {answer['error'] or ''} |")
    lock = h.get("decode_lock")
    if lock:
        lines += ["", f"Decodes take turns on fd 2 (a lock): a {lock['image']} took {lock['ms_one_thread']:.1f} ms "
                      f"from one thread, {lock['ms_two_threads_locked']:.1f} ms a decode from two with the lock and "
                      f"{lock['ms_two_threads_unlocked']:.1f} ms without it (load average {lock['load_average']})."]
    lines.append("")
    return lines
