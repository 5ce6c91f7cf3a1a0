"""Peak memory of a process that runs only the runtime: the benchmarks' memory figure.

    measure_memory("models/fashion_mnist_int8.tflite")   # starts a fresh Python, returns its figures

The child (`python -m edge_runtime.memory MODEL THREADS RUNS`) imports the
runtime, loads the model and classifies camera frames, recording its peak
resident set size (VmHWM) after each stage, and prints one JSON line. A
separate process, so nothing the caller loaded (TensorFlow in the workstation
benchmark) is counted; TensorFlow is refused there (only ai-edge-litert or
tflite-runtime may run the model). Nothing here is imported before it is needed,
so the child's first figure is Python's own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

MARKER = "EDGE_MEMORY "  # the child's result line on stdout


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, MB (VmHWM; getrusage where /proc is missing)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    import resource
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)  # bytes on macOS, KB elsewhere


def memory_probe(model: str | Path, threads: int = 1, runs: int = 20) -> dict:
    """In THIS process: import the runtime, load the model, classify frames; peak RSS per stage.

    Meant to run in a fresh child process (`measure_memory`), where it is all
    the process does.
    """
    stages = {"python": peak_rss_mb()}
    import cv2  # noqa: F401
    import numpy  # noqa: F401

    from .classifier import Classifier
    from .interpreter import find_interpreter
    from .synthetic import synthetic_frame
    backend = find_interpreter(allow_tensorflow=False)
    stages["imports"] = peak_rss_mb()
    clf = Classifier(model, num_threads=threads)
    stages["model_loaded"] = peak_rss_mb()
    frame = synthetic_frame()
    for _ in range(max(1, runs)):
        result = clf.classify(frame)
    stages["classified"] = peak_rss_mb()
    return {"peak_rss_mb": stages["classified"], "stages_mb": stages, "frames": max(1, runs),
            "label": result.best.label, "interpreter": f"{backend.package} {backend.version}",
            "tensorflow_imported": "tensorflow" in sys.modules, "pid": os.getpid()}


def child_result(module: str, args: list[str], marker: str, what: str, path: str | Path,
                 timeout: float = 300) -> dict:
    """Run `python -m module args...` in a fresh process with `path` on its PYTHONPATH and return
    the JSON it printed after `marker` on stdout; EdgeError naming `what` if it printed none."""
    from .errors import EdgeError
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(path), env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(marker):
            return json.loads(line[len(marker):])
    tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
    raise EdgeError(f"memory probe for {what} failed (exit status {proc.returncode}): {tail}")


def measure_memory(model: str | Path, threads: int = 1, runs: int = 20, timeout: float = 300) -> dict:
    """memory_probe's figures from a fresh Python process that does nothing else."""
    return child_result("edge_runtime.memory", [model, threads, runs], MARKER, str(model),
                        Path(__file__).resolve().parent.parent, timeout)


if __name__ == "__main__":
    model_arg, threads_arg, runs_arg = sys.argv[1:4]
    print(MARKER + json.dumps(memory_probe(model_arg, int(threads_arg), int(runs_arg))), flush=True)
