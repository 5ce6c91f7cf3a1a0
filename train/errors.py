"""Training's named errors: a user's mistake ends `python -m train` with one
`error:` line (through `process.command`), never a traceback."""

from __future__ import annotations

from edge_runtime.errors import EdgeError, UsageError


class ConfigError(UsageError, ValueError):
    """A setting has a value training can't use (also a ValueError, as bad values are)."""


class RunExistsError(UsageError, FileExistsError):
    """The run directory already holds a trained model."""


class NoCheckpointError(UsageError, FileNotFoundError):
    """--resume names a run with nothing to resume from."""


class TrainingError(EdgeError):
    """Training ended without a model to keep."""

    exit_code = 10
