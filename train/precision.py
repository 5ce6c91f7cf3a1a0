"""Training precision: float32, or mixed bfloat16 where the CPU computes it natively.

Why: on some CPUs with bfloat16 instructions (x86 AVX512_BF16 or AMX),
oneDNN runs the convolutions of a mixed_bfloat16 model (bfloat16 activations
and matmuls, float32 weights and optimizer state) 1.3x to 2x faster than
float32 on this project's models (an AMD EPYC: 18 s against 34 s an epoch),
which buys epochs inside the 20-minute budget. On others it is slower (an
Intel Xeon with AVX512_BF16 but no AMX: 41 s against 24 s), and without those
instructions bfloat16 is emulated and slower still. So `auto` picks bfloat16
only where the CPU has them *and* a few timed training steps of a small
convolutional model say it is faster here (`faster_policy`, ~10 s).

Whatever the training precision, the model the trainer saves (model.keras)
is float32: the converter, the reports and the tests never see bfloat16.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from .errors import ConfigError

CHOICES = ("auto", "float32", "mixed_bfloat16")
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_bf16(cpuinfo: str) -> bool:
    """True if /proc/cpuinfo text lists a native bfloat16 instruction set. Pure."""
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return any(flag in line.split() for flag in BF16_CPU_FLAGS)
    return False


def resolve(precision: str, cpuinfo_path: str = "/proc/cpuinfo") -> str:
    """The Keras dtype policy name for a config's `precision`."""
    if precision not in CHOICES:
        raise ConfigError(f"precision must be one of {', '.join(CHOICES)}, not {precision!r}")
    if precision != "auto":
        return precision
    try:
        cpuinfo = Path(cpuinfo_path).read_text()
    except OSError:  # not Linux: no cheap way to know, so the safe choice
        return "float32"
    return faster_policy() if cpu_has_bf16(cpuinfo) else "float32"


MIN_SPEEDUP = 1.1  # bfloat16 must be this much faster to be worth its rounding


def faster_policy(steps: int = 8, batch: int = 128) -> str:
    """'mixed_bfloat16' if training steps of a small convolutional model (the default
    model's kinds of layers at its sizes) run MIN_SPEEDUP times faster in it than in
    float32 on this machine, else 'float32'. A measurement: the CPU flags alone mislead."""
    import time

    import keras
    import numpy as np
    x = np.random.default_rng(0).random((batch, 28, 28, 1), np.float32)
    y = np.eye(10, dtype=np.float32)[np.arange(batch) % 10]
    seconds = {}
    for name in ("float32", "mixed_bfloat16"):
        with dtype_policy(name):
            model = keras.Sequential([
                keras.Input((28, 28, 1)),
                keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
                keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
                keras.layers.MaxPooling2D(),
                keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
                keras.layers.MaxPooling2D(),
                keras.layers.Flatten(),
                keras.layers.Dense(96, activation="relu"),
                keras.layers.Dense(10, activation="softmax", dtype="float32")])
        model.compile(optimizer="adam", loss="categorical_crossentropy")
        model.train_on_batch(x, y)  # the first step builds and compiles
        start = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(x, y)
        seconds[name] = time.perf_counter() - start
    return "mixed_bfloat16" if seconds["float32"] >= MIN_SPEEDUP * seconds["mixed_bfloat16"] else "float32"


@contextmanager
def dtype_policy(name: str):
    """Build layers under Keras dtype policy `name`, restoring the previous global policy after."""
    import keras
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
