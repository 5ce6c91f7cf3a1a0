"""Named errors of the runtime. Library code raises these (training and the
converter add their own, in train/errors.py and convert/errors.py); command-line shells catch them and
print `error: <message>` with the exit status below, never a traceback
(`--debug` shows one).

Messages are one line and say what is wrong and what to do about it.
"""

from __future__ import annotations


class EdgeError(Exception):
    """Base class for every error a user can cause and fix."""

    exit_code = 1


class UsageError(EdgeError):
    """Bad command-line arguments or settings."""

    exit_code = 2


class DataError(EdgeError):
    """The Fashion-MNIST files are missing, truncated or not what they claim to be."""

    exit_code = 3


class ModelError(EdgeError):
    """A model file is missing, unreadable, or not the model its metadata describes."""

    exit_code = 4


class ImageError(EdgeError):
    """An image file can't be read or decoded."""

    exit_code = 5


class CameraError(EdgeError):
    """A camera or video source can't be opened or stopped delivering frames."""

    exit_code = 6


class InterpreterError(EdgeError):
    """No usable TFLite interpreter package is installed."""

    exit_code = 7


class ImprintError(EdgeError):
    """A folder of own photos, or its imprint file, can't be used with this model."""

    exit_code = 11
