"""Where the deployed model lives, what its files are called, and which one a command uses.

`make convert` writes one file per variant into models/; the device runs
the int8 one. A default int8 model also ships inside this package
(edge_runtime/shipped/, refreshed by `make ship-model`), so a fresh clone or
`pip install ./edge_runtime` classifies without training. These names are
defined here and nowhere else.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# The converter's variants, smallest change first; only int8 is full-integer
# (`dynamic` is dynamic-range quantization: int8 weights, float activations).
VARIANTS = ("float32", "float16", "dynamic", "int8")
DEPLOYED_VARIANT = "int8"
MODELS_DIR = "models"
MODEL_ENV_VAR = "EDGE_MODEL"
# A top score below this is `unknown` when the model's metadata has no calibrated
# `unknown_threshold` (the converter sets one for models trained on photos).
# Defined here, where every command's flags can read it without numpy;
# edge_runtime.classifier uses it as classifier.DEFAULT_THRESHOLD.
DEFAULT_THRESHOLD = 0.5
# The package data folder holding the shipped model, its metadata and its gate figures.
SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"
SHIPPED_GATE = SHIPPED_DIR / "gate.json"


def model_filename(variant: str = DEPLOYED_VARIANT) -> str:
    """fashion_mnist_<variant>.tflite: the file `make convert` writes for a variant."""
    return f"fashion_mnist_{variant}.tflite"


MODEL_FILENAME = model_filename()  # the deployed model
SHIPPED_MODEL = SHIPPED_DIR / MODEL_FILENAME

# Where a model came from, as `info`, `doctor` and --verbose say it.
FROM_FLAG = "--model"
FROM_ENV = f"${MODEL_ENV_VAR}"
FROM_CWD = f"{MODELS_DIR}/ in the current directory"
FROM_CHECKOUT = f"{MODELS_DIR}/ of the checkout"
FROM_SHIPPED = "shipped with edge_runtime"
FROM_NOWHERE = "nowhere: no model found"


@dataclass(frozen=True)
class ModelChoice:
    path: Path
    source: str  # one of the FROM_* strings

    @property
    def shipped(self) -> bool:
        return self.source == FROM_SHIPPED


def find_model(explicit: str | Path | None = None, environ=None, cwd: Path | None = None) -> ModelChoice:
    """The model a command uses, and why that one. First match wins:

    --model, then $EDGE_MODEL, then models/<name> in the current directory
    (the project checkout or an unpacked Pi bundle), then models/ beside this
    package (a checkout run from elsewhere), then the model shipped inside
    this package. With none of them present, the current directory's
    models/<name>, so the error names the place `make convert` writes.
    """
    environ = os.environ if environ is None else environ
    if explicit:
        return ModelChoice(Path(explicit), FROM_FLAG)
    if environ.get(MODEL_ENV_VAR):
        return ModelChoice(Path(environ[MODEL_ENV_VAR]), FROM_ENV)
    here = (Path.cwd() if cwd is None else cwd) / MODELS_DIR / MODEL_FILENAME
    if here.is_file():
        return ModelChoice(here, FROM_CWD)
    beside = Path(__file__).resolve().parent.parent / MODELS_DIR / MODEL_FILENAME
    if beside.is_file():
        return ModelChoice(beside, FROM_CHECKOUT)
    if SHIPPED_MODEL.is_file():
        return ModelChoice(SHIPPED_MODEL, FROM_SHIPPED)
    return ModelChoice(here, FROM_NOWHERE)


def default_model_path() -> Path:
    """The model path a command uses when --model is not given (see find_model)."""
    return find_model().path
