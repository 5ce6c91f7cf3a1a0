"""The converter's named errors. `process.command` prints them as one
`error:` line and ends with their exit status."""

from __future__ import annotations

from edge_runtime.errors import EdgeError


class GateError(EdgeError):
    """A converted model lost too much accuracy to be deployed."""

    exit_code = 8


class ConversionError(EdgeError):
    """The TFLite converter could not produce a variant."""

    exit_code = 9
