"""Find a TFLite interpreter without importing TensorFlow unless nothing else exists.

Order of preference:
1. ai_edge_litert — the maintained LiteRT package (x86_64 and aarch64 wheels).
2. tflite_runtime — legacy; the only choice on 32-bit Raspberry Pi OS. Its
   2.14 wheels were built against numpy 1 and fail to import under numpy 2.
3. tensorflow.lite — a last resort on a workstation that has TensorFlow.
"""

from __future__ import annotations

import importlib
import platform
import struct
from dataclasses import dataclass
from typing import Callable

from . import native_stderr
from .errors import InterpreterError

# (package shown to users, module to import, attribute holding the Interpreter class)
CANDIDATES = (
    ("ai-edge-litert", "ai_edge_litert.interpreter", "Interpreter"),
    ("tflite-runtime", "tflite_runtime.interpreter", "Interpreter"),
    ("tensorflow", "tensorflow.lite", "Interpreter"),
)


@dataclass(frozen=True)
class Probe:
    package: str
    ok: bool
    detail: str  # version when ok, else why not and what to do


@dataclass(frozen=True)
class InterpreterChoice:
    package: str
    version: str
    factory: Callable  # Interpreter class: factory(model_path=..., num_threads=...)


def userland_machine(machine: str | None = None, pointer_bits: int | None = None) -> str:
    """The architecture wheels must be built for: the userland's, not the kernel's.

    32-bit Raspberry Pi OS on a Pi 4/5 runs a 64-bit kernel, so uname says
    aarch64 while Python and pip are armv7l.
    """
    machine = machine or platform.machine()
    pointer_bits = pointer_bits or 8 * struct.calcsize("P")
    if pointer_bits == 32 and machine in ("aarch64", "arm64", "armv8l"):
        return "armv7l"
    if pointer_bits == 32 and machine in ("x86_64", "AMD64"):
        return "i686"
    return machine


def install_hint(machine: str | None = None) -> str:
    machine = machine or userland_machine()
    if machine in ("armv7l", "armv6l"):
        return ("32-bit OS: ai-edge-litert has no armv7l wheels; "
                "install tflite-runtime with numpy<2: pip install 'tflite-runtime==2.14.*' 'numpy<2'")
    return "pip install ai-edge-litert"


def _why_not(package: str, error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".splitlines()[0]
    if package == "tflite-runtime" and ("numpy" in text.lower() or "_ARRAY_API" in text or "multiarray" in text):
        return f"built against numpy 1, fails with numpy 2 ({text}); use ai-edge-litert, or numpy<2"
    if isinstance(error, ModuleNotFoundError):
        return "not installed"
    return text


def _version(module_name: str) -> str:
    from importlib import metadata
    dist = {"ai_edge_litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime",
            "tensorflow": "tensorflow"}[module_name.split(".")[0]]
    for name in (dist, dist + "-cpu"):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


def _try(package: str, module_name: str, attr: str):
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr), None
    except Exception as e:  # ImportError, numpy ABI errors (AttributeError/RuntimeError), broken installs
        return None, e


def probe_all(include_tensorflow: bool = False) -> list[Probe]:
    """Try each candidate (TensorFlow only if asked: importing it takes seconds and GBs)."""
    probes = []
    for package, module_name, attr in CANDIDATES:
        if package == "tensorflow" and not include_tensorflow:
            probes.append(Probe(package, False, "not tried (last resort, heavy)"))
            continue
        cls, error = _try(package, module_name, attr)
        probes.append(Probe(package, True, _version(module_name)) if cls else Probe(package, False, _why_not(package, error)))
    return probes


_chosen: InterpreterChoice | None = None


def find_interpreter(allow_tensorflow: bool = True) -> InterpreterChoice:
    """The first importable interpreter, cached for the process."""
    global _chosen
    if _chosen is not None:
        return _chosen
    reasons = []
    for package, module_name, attr in CANDIDATES:
        if package == "tensorflow" and not allow_tensorflow:
            continue
        cls, error = _try(package, module_name, attr)
        if cls is not None:
            _chosen = InterpreterChoice(package, _version(module_name), cls)
            return _chosen
        reasons.append(f"{package}: {_why_not(package, error)}")
    raise InterpreterError(f"no TFLite interpreter usable ({'; '.join(reasons)}); {install_hint()}")


# LiteRT's C++ core writes this to file descriptor 2 the first time a model's
# tensors are allocated, on every run; there is no Python switch for it
# (google-ai-edge/LiteRT#7420). It says nothing a user can act on.
DELEGATE_NOTICE = "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."


def open_interpreter(choice: InterpreterChoice, model_path: str, num_threads: int):
    """An interpreter for `model_path` with its tensors allocated. Whatever the
    interpreter writes to stderr meanwhile is passed on, except DELEGATE_NOTICE."""
    with native_stderr.dropping(lambda line: line.strip() == DELEGATE_NOTICE):
        interpreter = choice.factory(model_path=model_path, num_threads=num_threads)
        interpreter.allocate_tensors()
    return interpreter
