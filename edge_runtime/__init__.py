"""Fashion-MNIST clothing classification on small devices.

Needs numpy, OpenCV and a TFLite interpreter only; never imports TensorFlow
(unless no other interpreter is installed). Heavy parts import lazily: even
numpy loads only when something needs it, so `python -m edge_runtime` has
its Ctrl-C handling in place before the first heavy import.
"""

from .errors import CameraError, DataError, EdgeError, ImageError, InterpreterError, ModelError, UsageError

__all__ = ["Classifier", "Prediction", "Result", "EdgeError", "CameraError", "DataError", "ImageError",
           "InterpreterError", "ModelError", "UsageError"]
__version__ = "0.1.0"

_FROM_CLASSIFIER = ("Classifier", "Prediction", "Result")


def __getattr__(name: str):
    if name in _FROM_CLASSIFIER:
        from . import classifier
        return getattr(classifier, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
