"""Fashion-MNIST clothing classification on small devices.

Needs numpy, OpenCV and a TFLite interpreter only; never imports TensorFlow
(unless no other interpreter is installed). Heavy parts import lazily.
"""

from .classifier import Classifier, Prediction, Result
from .errors import CameraError, DataError, EdgeError, ImageError, InterpreterError, ModelError, UsageError

__all__ = ["Classifier", "Prediction", "Result", "EdgeError", "CameraError", "DataError", "ImageError",
           "InterpreterError", "ModelError", "UsageError"]
__version__ = "0.1.0"
