"""`python -m edge_runtime doctor`: is this device ready to classify, and if not, what to do.

Checks Python, the CPU architecture, numpy, each TFLite interpreter package,
OpenCV, the model, cameras, the display and whether `serve`'s port is free,
and prints one line per check with the exact fix for each problem. Exit status 0 when everything needed to
classify works (cameras and a display are only reported), 1 otherwise.

The checks are pure functions of an `Environment` (machine, environment
variables, module importer, package versions, video devices, model loader),
so tests can fake a 32-bit Pi with numpy 2, a server without a camera, or a
Pi with picamera2; `Environment.current()` is the real machine.
"""

from __future__ import annotations

import importlib
import json
import platform
import struct
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from .argtypes import add_model_arguments, count
from .deployed import FROM_FLAG, MODEL_FILENAME, find_model
from .display import NO_GUI_FIX, gui_backend, has_display
from .errors import EdgeError
from .interpreter import Probe, install_hint, probe_all, userland_machine

OK, FAIL, WARN, INFO = "ok", "FAIL", "warn", "-"  # FAIL: can't classify; warn: webcam/display only

# V4L2 nodes of the Pi's own hardware blocks (codecs, ISP, the CSI receiver):
# they are not cameras OpenCV can read.
PI_INTERNAL_V4L2 = ("bcm2835-codec", "bcm2835-isp", "rpivid", "pispbe", "rp1-cfe", "unicam", "hevc")


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # OK, FAIL, WARN or INFO
    detail: str
    fix: str = ""


def _version_of(dist: str) -> str | None:
    from importlib import metadata
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _video_devices() -> list[tuple[str, str]]:
    """[(/dev/videoN, driver's name for it)] from sysfs, sorted by N."""
    root = Path("/sys/class/video4linux")
    found = []
    for node in sorted(root.glob("video*"), key=lambda p: int(p.name[5:]) if p.name[5:].isdigit() else 0):
        try:
            name = (node / "name").read_text().strip()
        except OSError:
            name = "?"
        found.append((f"/dev/{node.name}", name))
    return found


def port_in_use(host: str, port: int) -> str | None:
    """Why `serve` could not listen on host:port (the OS's reason), or None when it could.

    Probed on the wildcard address by default: it collides with a listener on
    any address of this machine. SO_REUSEADDR as the server sets it, so
    connections still closing don't count as in use.
    """
    import socket
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as e:
        return e.strerror or str(e)
    return None


def _load_model(path: Path) -> str:
    """Load the model with the interpreter the runtime would pick and time one inference."""

    import numpy as np

    from .classifier import Classifier
    from .timing import summarize, time_calls
    clf = Classifier(path)
    blank = np.zeros(clf.input_size, np.uint8)
    # one untimed call first: it allocates the tensors
    ms = summarize(time_calls(lambda: clf.classify_input(blank), runs=10, warmup=1))["median_us"] / 1e3
    return f"loads with {clf.backend.package} {clf.backend.version}, {ms:.2f} ms per image"


@dataclass
class Environment:
    """Everything the checks look at; `current()` is this machine, tests build their own."""

    python_version: str = platform.python_version()
    python_executable: str = sys.executable
    machine: str = platform.machine()  # what the kernel says: aarch64 even under a 32-bit Pi OS
    pointer_bits: int = 8 * struct.calcsize("P")  # the Python's own: 32 on a 32-bit userland
    environ: Mapping[str, str] = field(default_factory=dict)
    import_module: Callable[[str], Any] = importlib.import_module
    dist_version: Callable[[str], str | None] = _version_of
    video_devices: Callable[[], list[tuple[str, str]]] = _video_devices
    probes: Callable[[], list[Probe]] = probe_all
    model_path: Path = Path("models") / MODEL_FILENAME
    model_source: str = FROM_FLAG  # where model_path came from (deployed.find_model)
    load_model: Callable[[Path], str] = _load_model
    serve_port: int = 8080  # the port `serve` listens on by default
    port_in_use: Callable[[str, int], str | None] = port_in_use

    @classmethod
    def current(cls, model_path: Path | None = None, serve_port: int = 8080) -> "Environment":
        import os
        choice = find_model(model_path)
        return cls(environ=dict(os.environ), model_path=choice.path, model_source=choice.source,
                   serve_port=serve_port)

    @property
    def arch(self) -> str:
        """The architecture wheels must be built for (the userland's, not the kernel's)."""
        return userland_machine(self.machine, self.pointer_bits)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


# -- the checks: pure functions of an Environment ------------------------------------


def check_python(env: Environment) -> Check:
    version = tuple(int(p) for p in env.python_version.split(".")[:2])
    detail = f"{env.python_version} ({env.python_executable})"
    if version < (3, 10):
        return Check("python", FAIL, detail, "install Python 3.10 or newer (Raspberry Pi OS 12 has 3.11)")
    return Check("python", OK, detail)


def check_architecture(env: Environment) -> Check:
    arch = env.arch
    kernel = f" (32-bit userland on a 64-bit {env.machine} kernel)" if arch != env.machine else ""
    if arch in ("aarch64", "arm64", "x86_64", "AMD64"):
        return Check("architecture", OK, f"{arch}, 64-bit: ai-edge-litert has wheels")
    if arch == "armv7l":
        return Check("architecture", OK, f"armv7l{kernel}: 32-bit, only tflite-runtime 2.14 with numpy<2 "
                     "(a 64-bit OS is faster and simpler)")
    return Check("architecture", WARN, f"{arch}{kernel}: no TFLite wheels are published for it",
                 "use a 64-bit OS (Raspberry Pi OS 64-bit needs a Pi 3, 4, 5 or Zero 2)")


def check_numpy(env: Environment) -> Check:
    try:
        numpy = env.import_module("numpy")
    except Exception as e:
        return Check("numpy", FAIL, _first_line(e), "pip install numpy")
    version = str(numpy.__version__)
    if env.arch == "armv7l" and int(version.split(".")[0]) >= 2:
        return Check("numpy", FAIL, f"{version}: tflite-runtime 2.14, the only interpreter for armv7l, "
                     "was built against numpy 1", "pip install 'numpy<2'")
    return Check("numpy", OK, version)


def check_interpreters(env: Environment) -> list[Check]:
    """One line per interpreter package (why it is or isn't usable), then the verdict."""
    probes = env.probes()
    rows = []
    for p in probes:
        detail = p.detail
        if not p.ok and p.package == "ai-edge-litert" and env.arch in ("armv7l", "armv6l") \
                and "not installed" in detail:
            detail += " (no wheels for 32-bit ARM)"
        rows.append(Check(f"interpreter: {p.package}", OK if p.ok else INFO, detail))
    usable = [p for p in probes if p.ok]
    if usable:
        verdict = Check("interpreter", OK, f"using {usable[0].package} {usable[0].detail}")
    else:
        verdict = Check("interpreter", FAIL, "no usable TFLite interpreter", install_hint(env.arch))
    return [verdict, *rows]


def check_opencv(env: Environment) -> Check:
    wheels = [d for d in ("opencv-python", "opencv-python-headless", "opencv-contrib-python",
                          "opencv-contrib-python-headless") if env.dist_version(d)]
    try:
        cv2 = env.import_module("cv2")
    except Exception as e:
        text = _first_line(e)
        if "libGL" in text or "libgthread" in text:
            fix = "sudo apt install libgl1 libglib2.0-0, or use opencv-python-headless"
        elif "numpy" in text.lower() or "multiarray" in text:
            fix = "OpenCV was built for another numpy: reinstall it (deploy/install.sh picks matching versions)"
        elif env.arch in ("armv7l", "armv6l"):
            fix = "sudo apt install python3-opencv and create the venv with --system-site-packages"
        else:
            fix = "pip install opencv-python-headless (or opencv-python for a window)"
        return Check("opencv", FAIL, text, fix)
    origin = ", ".join(wheels) if wheels else f"a system package ({Path(getattr(cv2, '__file__', '?')).parent})"
    gui = gui_backend(cv2.getBuildInformation()) or "none (headless build)"
    detail = f"{cv2.__version__} from {origin}; GUI: {gui}"
    gui_wheels = [w for w in wheels if not w.endswith("-headless")]
    if gui_wheels and len(wheels) > 1:
        return Check("opencv", WARN, f"{detail}; these wheels overwrite each other's cv2 module",
                     f"pip uninstall -y {' '.join(wheels)} && pip install opencv-python-headless "
                     "(or opencv-python for a window)")
    return Check("opencv", OK, detail)


def check_model(env: Environment, interpreter_ok: bool) -> Check:
    from .metadata import read_metadata

    path = env.model_path
    if not path.is_file():
        return Check("model", FAIL, f"no model at {path} (from {env.model_source})",
                     "pass --model PATH or set EDGE_MODEL, or run from the bundle directory "
                     f"(models/{MODEL_FILENAME}), or reinstall edge_runtime with its shipped model; "
                     "on the workstation: make train convert")
    try:
        meta = read_metadata(path)
    except EdgeError as e:
        return Check("model", FAIL, str(e), "copy the model together with its .json, or reconvert: make convert")
    accuracy = (meta.get("accuracy") or {}).get("accuracy")
    parts = [f"{path} ({path.stat().st_size / 1024:.0f} KB, from {env.model_source})", meta.get("variant", "model"),
             f"{len(meta['labels'])} labels", f"input {meta['input'].get('dtype', '?')} {meta['input'].get('shape')}"]
    if accuracy is not None:
        parts.append(f"test accuracy {accuracy:.4f}")
    if not interpreter_ok:
        return Check("model", WARN, ", ".join(parts) + "; not loaded (no interpreter)")
    try:
        parts.append(env.load_model(path))
    except Exception as e:  # noqa: BLE001 - a model that breaks the interpreter is a FAIL row, not a crash
        detail = str(e) if isinstance(e, EdgeError) else f"{path}: {_first_line(e)}"
        return Check("model", FAIL, detail, "reconvert it (make convert) or copy the bundle's models/ again")
    return Check("model", OK, ", ".join(parts))


def check_cameras(env: Environment) -> list[Check]:
    devices = env.video_devices()
    cameras = [(dev, name) for dev, name in devices if not any(k in name.lower() for k in PI_INTERNAL_V4L2)]
    rows = []
    listing = ", ".join(f"{dev} ({name})" for dev, name in cameras)
    # A USB webcam usually shows up as two nodes (video + metadata): the first is the camera.
    rows.append(Check("camera: V4L2", OK if cameras else INFO, listing or "no USB/V4L2 cameras"
                      + (f" ({len(devices)} Pi-internal nodes ignored)" if devices else "")))
    csi = []
    try:
        picamera2 = env.import_module("picamera2")
        from .capture import camera_modules
        csi = camera_modules(picamera2.Picamera2.global_camera_info())
        rows.append(Check("camera: picamera2", OK if csi else INFO,
                          ", ".join(f"camera {c.get('Num', i)}: {c.get('Model', '?')}" for i, c in enumerate(csi))
                          or "installed, no camera module detected",
                          "" if csi else "check the ribbon cable and `rpicam-hello --list-cameras`"))
    except ModuleNotFoundError:
        rows.append(Check("camera: picamera2", INFO, "not installed (only needed for a Raspberry Pi camera module: "
                          "sudo apt install python3-picamera2, venv with --system-site-packages)"))
    except Exception as e:
        fix = "picamera2 from apt needs apt's numpy: rerun deploy/install.sh (it keeps the system numpy)" \
            if "numpy" in str(e).lower() or "dtype size" in str(e) else "sudo apt install --reinstall python3-picamera2"
        rows.append(Check("camera: picamera2", WARN, f"installed but broken: {_first_line(e)}", fix))
    if cameras or csi:
        default = "csi (the camera module)" if csi else "0"
        verdict = Check("cameras", OK, f"{len(cameras)} V4L2, {len(csi)} Pi camera module; "
                        f"webcam --camera auto uses {default}")
    else:
        verdict = Check("cameras", WARN, "none found: webcam can read video files and streams only",
                        "plug in a USB webcam (ls /dev/video*) or connect a camera module")
    return [verdict, *rows]


def check_display(env: Environment) -> Check:
    if not has_display(env.environ):
        return Check("display", INFO, "none (DISPLAY and WAYLAND_DISPLAY unset): webcam runs headless, "
                     "JSON lines on stdout")
    where = env.environ.get("WAYLAND_DISPLAY") or env.environ.get("DISPLAY")
    try:
        backend = gui_backend(env.import_module("cv2").getBuildInformation())
    except Exception:
        backend = None
    if backend is None:
        return Check("display", WARN, f"{where}, but this OpenCV has no GUI support: webcam runs headless",
                     NO_GUI_FIX.removeprefix("for a window: "))
    return Check("display", OK, f"{where}, OpenCV GUI {backend}: webcam opens a window")


def check_port(env: Environment) -> Check:
    """Whether `serve` can listen on its port; reported, not needed to classify."""
    port = env.serve_port
    reason = env.port_in_use("0.0.0.0", port)
    if reason is None:
        return Check("serve port", OK, f"{port} is free: python -m edge_runtime serve can listen there")
    return Check("serve port", WARN, f"{port} is in use ({reason}): serve can't listen there",
                 f"stop what holds it (ss -ltnp 'sport = :{port}' names it; systemctl stop fashion-edge-serve "
                 f"if it is the service), or run serve --port {port + 1}")


def run_checks(env: Environment) -> list[Check]:
    interpreters = check_interpreters(env)
    return [check_python(env), check_architecture(env), check_numpy(env), *interpreters, check_opencv(env),
            check_model(env, interpreters[0].status == OK), *check_cameras(env), check_display(env),
            check_port(env)]


def exit_status(checks: list[Check]) -> int:
    return 1 if any(c.status == FAIL for c in checks) else 0


def format_report(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = []
    for c in checks:
        lines.append(f"{c.status:4s}  {c.name:{width}s}  {c.detail}")
        if c.fix and c.status != OK:
            lines.append(f"      {'':{width}s}  fix: {c.fix}")
    failed = [c.name for c in checks if c.status == FAIL]
    lines.append(f"not ready to classify: {', '.join(failed)} (see the fixes above)" if failed
                 else "ready to classify")
    return "\n".join(lines)


# -- the command --------------------------------------------------------------------


def configure(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")
    parser.add_argument("--port", type=count(1, 65535), default=8080, help="the port `serve` would listen on")
    add_model_arguments(parser)


def run(args) -> int:
    checks = run_checks(Environment.current(args.model, args.port))
    if args.json:
        print(json.dumps({"ready": exit_status(checks) == 0, "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        print(format_report(checks))
    return exit_status(checks)
