#!/usr/bin/env bash
# Install the fashion-edge runtime on this device, into .venv beside this script.
#
#   ./install.sh              choose everything for this device (see below)
#   ./install.sh --gui        OpenCV with window support, even if no desktop is running now
#   ./install.sh --headless   OpenCV without GUI support (SSH and systemd only)
#   ./install.sh --system     use Debian's OpenCV, numpy and picamera2 (apt) from the venv
#   ./install.sh --pip        everything from PyPI, isolated from the system's packages
#   ./install.sh --service    also install and start the headless webcam unit (uses sudo)
#   ./install.sh --serve      also install and start the web view unit: port 8080 on the LAN (uses sudo)
#
# Why a virtualenv: Raspberry Pi OS 12 refuses `pip install` outside one
# (PEP 668, "externally-managed-environment"), and a venv keeps the runtime's
# packages from fighting apt's. Run it again to reinstall; it starts afresh.
#
# What gets installed, and why:
# - The TFLite interpreter: ai-edge-litert on a 64-bit OS (aarch64, x86_64).
#   A 32-bit OS (armv7l) has no ai-edge-litert wheels, so tflite-runtime 2.14
#   with numpy<2 (those wheels were built against numpy 1). What counts is the
#   Python's architecture, not the kernel's: 32-bit Raspberry Pi OS boots a
#   64-bit kernel on a Pi 4/5, so `uname -m` says aarch64 while pip needs
#   armv7l wheels.
# - OpenCV: opencv-python (with GUI) and opencv-python-headless both install a
#   `cv2` module and overwrite each other, so exactly one is installed:
#   the GUI one when a desktop is running (or --gui), else the headless one
#   (no X11/GTK libraries needed). edge_runtime itself is installed with
#   --no-deps so its declared opencv-python-headless doesn't come along too.
# - --system, chosen automatically when the system Python has picamera2 (as on
#   Raspberry Pi OS) and on armv7l: the venv sees apt's packages
#   (--system-site-packages) and uses apt's python3-opencv (GTK GUI, also fine
#   headless), numpy and picamera2. picamera2 only comes from apt (it needs
#   libcamera's Python bindings), and apt's picamera2 and simplejpeg are built
#   against apt's numpy: a numpy 2 from pip would break them, so pip is held to
#   the system's numpy. PyPI has no armv7l OpenCV wheels, hence apt there too.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
PYTHON=${PYTHON:-python3}   # the system's Python: --system needs the one apt installs into
VENV="$HERE/.venv"
MODE=auto OPENCV=auto SERVICE=0 SERVE=0

say() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

for arg in "$@"; do
    case "$arg" in
        --gui) OPENCV=gui ;;
        --headless) OPENCV=headless ;;
        --system) MODE=system ;;
        --pip) MODE=pip ;;
        --service) SERVICE=1 ;;
        --serve) SERVE=1 ;;
        -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $arg (see $0 --help)" ;;
    esac
done
[ "$SERVICE" = 0 ] || [ "$SERVE" = 0 ] || die "--service and --serve both want the camera: choose one"

command -v "$PYTHON" >/dev/null || die "$PYTHON not found: sudo apt install python3 python3-venv"
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || die "Python's venv module is missing: sudo apt install python3-venv"

# 1. Architecture of the Python userland -> interpreter package.
ARCH=$("$PYTHON" -c 'import platform, struct
m = platform.machine()
print("armv7l" if struct.calcsize("P") == 4 and m in ("aarch64", "arm64", "armv8l") else m)')
PIP_EXTRA=()
case "$ARCH" in
    aarch64|arm64|x86_64|AMD64)
        REQUIREMENTS=requirements-device.txt
        "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
            || die "ai-edge-litert 2.3 needs Python 3.10+; this is $("$PYTHON" -V 2>&1). Use Raspberry Pi OS 12 (bookworm) or newer"
        ;;
    armv7l)
        REQUIREMENTS=requirements-device-armv7l.txt
        PIP_EXTRA=(--extra-index-url https://www.piwheels.org/simple)  # armv7l wheels live there
        ;;
    *) die "no TFLite interpreter wheels exist for $ARCH; use a Pi 3, 4, 5 or Zero 2 with a 64-bit OS" ;;
esac

# 2. Where numpy, OpenCV and picamera2 come from.
if [ "$MODE" = auto ]; then
    if "$PYTHON" -c 'import picamera2' 2>/dev/null || [ "$ARCH" = armv7l ]; then MODE=system; else MODE=pip; fi
fi
if [ "$OPENCV" = auto ]; then
    if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ] || [ "$(systemctl get-default 2>/dev/null || true)" = graphical.target ]; then
        OPENCV=gui
    else
        OPENCV=headless
    fi
fi
say "architecture $ARCH, packages from $MODE, OpenCV $([ "$MODE" = system ] && echo "from apt (python3-opencv)" || echo "$OPENCV")"

VENV_OPTS=()
CONSTRAINT=""
PACKAGES=(-r "$HERE/$REQUIREMENTS")
if [ "$MODE" = system ]; then
    if ! "$PYTHON" -c 'import cv2, numpy' 2>/dev/null; then
        say "installing Debian's python3-opencv and python3-numpy (apt, needs sudo)"
        sudo apt-get install -y python3-opencv python3-numpy \
            || die "apt-get failed; run: sudo apt install python3-opencv python3-numpy (or use ./install.sh --pip)"
    fi
    VENV_OPTS=(--system-site-packages)
    CONSTRAINT="numpy==$("$PYTHON" -c 'import numpy; print(numpy.__version__)')"
else
    OPENCV_PACKAGE=opencv-python-headless
    [ "$OPENCV" = gui ] && OPENCV_PACKAGE=opencv-python
    [ "$ARCH" = armv7l ] && OPENCV_PACKAGE="$OPENCV_PACKAGE<4.12"  # 4.12+ needs numpy 2
    PACKAGES+=("$OPENCV_PACKAGE")
fi

# 3. The virtualenv, then the packages, then the runtime itself.
say "creating $VENV"
"$PYTHON" -m venv --clear ${VENV_OPTS[@]+"${VENV_OPTS[@]}"} "$VENV"
if [ "$MODE" = system ] && ! "$VENV/bin/python" -c 'import cv2' 2>/dev/null; then
    die "apt's OpenCV is not visible from the venv: $PYTHON is not the system's Python; run PYTHON=/usr/bin/python3 $0, or use --pip"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check --no-input)
printf '%s\n' "$CONSTRAINT" > "$VENV/constraints.txt"
say "installing ${PACKAGES[*]:1}${CONSTRAINT:+ (keeping $CONSTRAINT)}"
"${PIP[@]}" install ${PIP_EXTRA[@]+"${PIP_EXTRA[@]}"} -c "$VENV/constraints.txt" "${PACKAGES[@]}"
"${PIP[@]}" install --no-deps "$HERE/edge_runtime"

# 4. Check: the doctor loads the model with the installed interpreter.
say "checking with: $HERE/run doctor"
"$HERE/run" doctor || die "the runtime is installed but not ready; see the fixes above"

install_unit() {  # install_unit NAME: fill in the template, install it, start it now and at boot
    local unit=/etc/systemd/system/$1.service
    say "installing $unit (sudo)"
    sed -e "s|@DIR@|$HERE|g" -e "s|@USER@|$(id -un)|g" "$HERE/$1.service" | sudo tee "$unit" >/dev/null
    sudo systemctl daemon-reload
    sudo systemctl enable --now "$1.service"
}
if [ "$SERVICE" = 1 ]; then
    install_unit fashion-edge-webcam
    say "running; follow it with: journalctl -u fashion-edge-webcam -f"
fi
if [ "$SERVE" = 1 ]; then
    # Only one program can hold the camera.
    if systemctl is-enabled --quiet fashion-edge-webcam.service 2>/dev/null; then
        say "stopping fashion-edge-webcam.service: the web view needs the camera"
        sudo systemctl disable --now fashion-edge-webcam.service
    fi
    install_unit fashion-edge-serve
    say "running; the addresses and token: journalctl -u fashion-edge-serve | tail"
fi

cat <<DONE
Installed. Next:
  $HERE/run webcam               classify the camera (a window on a desktop, else JSON lines)
  $HERE/run classify photo.jpg   classify image files
  $HERE/run serve                the camera in a browser: http://127.0.0.1:8080/ (--host 0.0.0.0 for the LAN)
  $HERE/install.sh --service     classify the camera headless at every boot (systemd)
  $HERE/install.sh --serve       the web view at every boot, on the LAN (systemd)
DONE
