"""Where the deployed model lives and what its files are called.

`make convert` writes one file per variant into models/; the device runs
the int8 one. These names are defined here and nowhere else.
"""

from __future__ import annotations

import os
from pathlib import Path

# The converter's variants, smallest change first; only int8 is full-integer
# (`dynamic` is dynamic-range quantization: int8 weights, float activations).
VARIANTS = ("float32", "float16", "dynamic", "int8")
DEPLOYED_VARIANT = "int8"
MODELS_DIR = "models"
MODEL_ENV_VAR = "EDGE_MODEL"


def model_filename(variant: str = DEPLOYED_VARIANT) -> str:
    """fashion_mnist_<variant>.tflite: the file `make convert` writes for a variant."""
    return f"fashion_mnist_{variant}.tflite"


MODEL_FILENAME = model_filename()  # the deployed model


def default_model_path() -> Path:
    """Where the deployed model is, when --model is not given.

    EDGE_MODEL, else models/<name> in the current directory (the project
    checkout or an unpacked Pi bundle), else models/ beside this package.
    """
    if os.environ.get(MODEL_ENV_VAR):
        return Path(os.environ[MODEL_ENV_VAR])
    here = Path.cwd() / MODELS_DIR / MODEL_FILENAME
    if here.is_file():
        return here
    beside = Path(__file__).resolve().parent.parent / MODELS_DIR / MODEL_FILENAME
    return beside if beside.is_file() else here
