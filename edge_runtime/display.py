"""Is there a screen, and can this OpenCV open a window on it? Pure functions
of the environment and of cv2.getBuildInformation(), shared by `webcam` (window
or headless) and `doctor` (what the display check reports)."""

from __future__ import annotations

import re
import sys
from typing import Mapping


def gui_backend(build_info: str) -> str | None:
    """The GUI toolkit OpenCV was built with (GTK3, QT5, WIN32UI, COCOA...), None when headless. Pure.

    Reads cv2.getBuildInformation(): `GUI: NONE` in opencv-python-headless,
    `GUI: GTK3` in Debian's python3-opencv; older builds list toolkits
    under an empty `GUI:` line (`GTK+: YES (ver 3.24)`).
    """
    lines = build_info.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"(\s*)GUI:\s*(.*)$", line)
        if not m:
            continue
        value = m.group(2).strip()
        if value:
            return None if value.upper() == "NONE" else value
        for sub in lines[i + 1:]:
            if not sub.strip() or len(sub) - len(sub.lstrip()) <= len(m.group(1)):
                break
            name, _, state = sub.strip().partition(":")
            if state.strip().upper().startswith("YES"):
                return name.strip()
        return None
    return None


def has_display(environ: Mapping[str, str], platform: str = sys.platform) -> bool:
    """Is there a screen to open a window on? On Linux that's an X11 or Wayland session. Pure."""
    if not platform.startswith("linux"):
        return True
    return bool(environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY"))


NO_GUI_FIX = ("for a window: pip uninstall -y opencv-python-headless && pip install opencv-python, "
              "or use Raspberry Pi OS's python3-opencv (deploy/install.sh --gui)")


def choose_window(headless: bool, environ: Mapping[str, str], build_info: str,
                  platform: str = sys.platform) -> tuple[bool, str | None]:
    """(open a window?, notice to print once). Pure."""
    if headless:
        return False, None
    if not has_display(environ, platform):
        return False, ("note: no display (DISPLAY and WAYLAND_DISPLAY are unset): running headless, "
                       "one JSON line per frame on stdout")
    backend = gui_backend(build_info)
    if backend is None:
        return False, f"note: this OpenCV has no GUI support: running headless; {NO_GUI_FIX}"
    return True, None
